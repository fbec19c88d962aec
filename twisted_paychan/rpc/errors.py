"""
Bitcoin Core's RPC error codes (``src/rpc/protocol.h``) that our server answers or our client
reads, named as Core names them, and the exception that carries one across our code: raised by
the server's methods, and by the client when a node answers with an error object.
"""

from __future__ import annotations

from typing import Final

#: Standard JSON-RPC 2.0 errors.
RPC_INVALID_REQUEST: Final = -32600
RPC_METHOD_NOT_FOUND: Final = -32601
RPC_INTERNAL_ERROR: Final = -32603
RPC_PARSE_ERROR: Final = -32700

#: General application errors.
RPC_MISC_ERROR: Final = -1
RPC_TYPE_ERROR: Final = -3
RPC_INVALID_ADDRESS_OR_KEY: Final = -5
RPC_INVALID_PARAMETER: Final = -8
RPC_DESERIALIZATION_ERROR: Final = -22
RPC_VERIFY_ERROR: Final = -25
RPC_VERIFY_REJECTED: Final = -26
RPC_VERIFY_ALREADY_IN_CHAIN: Final = -27
RPC_IN_WARMUP: Final = -28


class RpcError(Exception):
    """An error object of Bitcoin Core's RPC: ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}
