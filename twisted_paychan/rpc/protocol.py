"""
JSON-RPC as Bitcoin Core's HTTP server speaks it, without any I/O.

:func:`handle` takes a request body and a dispatcher and returns the HTTP status and body to
send. The rules are Core's (``httprpc.cpp``, ``rpc/request.cpp``, v28 and later):

* A request without ``"jsonrpc"`` or with ``"jsonrpc": "1.0"`` is *legacy*: the reply always has
  ``result``, ``error`` and ``id``, and an error reply goes out with an HTTP error status (500;
  400 for an invalid request, 404 for an unknown method).
* ``"jsonrpc": "2.0"``: the reply has ``jsonrpc``, ``id`` and either ``result`` or ``error``,
  always with HTTP 200; a request without ``id`` is a notification and gets 204, no body.
* A batch (a JSON array) always answers 200 with an array of replies (notifications left out);
  a non-empty batch of notifications only answers 204, an empty one ``[]``.
* A body that is not JSON: -32700 ``Parse error``, HTTP 500.

Methods are called as ``dispatch(method, params)`` with ``params`` a list or a dict (named
parameters); they return a JSON-able value or raise :class:`RpcError`. Any other exception
becomes -1 (``RPC_MISC_ERROR``) with its message, as Core turns a ``std::exception`` into one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from twisted_paychan.rpc import jsonenc
from twisted_paychan.rpc.errors import (
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_PARSE_ERROR,
    RpcError,
)

Params = Union[list[Any], dict[str, Any]]
Dispatch = Callable[[str, Params], Any]

HTTP_OK = 200
HTTP_NO_CONTENT = 204
HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
HTTP_INTERNAL_SERVER_ERROR = 500

_NO_ID = object()


class Version(enum.Enum):
    V1_LEGACY = "1.0"
    V2 = "2.0"


@dataclass(frozen=True)
class Reply:
    status: int
    #: The JSON text to send, or None for "204 No Content".
    body: Optional[bytes]


@dataclass
class _Request:
    id: Any = _NO_ID
    version: Version = Version.V1_LEGACY
    method: str = ""
    params: Params | None = None

    @property
    def is_notification(self) -> bool:
        return self.id is _NO_ID and self.version is Version.V2


def _parse(value: Any, request: _Request) -> None:
    """Fill ``request`` from one request object; raises RpcError(-32600) when it is not one.
    Fields are filled as they are read, so an error reply carries the id when there was one."""
    if not isinstance(value, dict):
        raise RpcError(RPC_INVALID_REQUEST, "Invalid Request object")
    request.id = value["id"] if "id" in value else _NO_ID
    version = value.get("jsonrpc")
    if version is not None:
        if not isinstance(version, str):
            raise RpcError(RPC_INVALID_REQUEST, "jsonrpc field must be a string")
        if version not in ("1.0", "2.0"):
            raise RpcError(RPC_INVALID_REQUEST, "JSON-RPC version not supported")
        request.version = Version(version)
    method = value.get("method")
    if method is None:
        raise RpcError(RPC_INVALID_REQUEST, "Missing method")
    if not isinstance(method, str):
        raise RpcError(RPC_INVALID_REQUEST, "Method must be a string")
    request.method = method
    params = value.get("params")
    if params is None:
        request.params = []
    elif isinstance(params, (list, dict)):
        request.params = params
    else:
        raise RpcError(RPC_INVALID_REQUEST, "Params must be an array or object")


def reply_object(request: _Request, result: Any = None, error: Optional[RpcError] = None) -> dict[str, Any]:
    reply_id = None if request.id is _NO_ID else request.id
    if request.version is Version.V2:
        reply: dict[str, Any] = {"jsonrpc": "2.0"}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error.to_json()
        reply["id"] = reply_id
        return reply
    return {"result": None if error is not None else result, "error": None if error is None else error.to_json(), "id": reply_id}


def _execute(request: _Request, dispatch: Dispatch) -> Any:
    assert request.params is not None
    try:
        return dispatch(request.method, request.params)
    except RpcError:
        raise
    except Exception as e:
        raise RpcError(RPC_MISC_ERROR, str(e) or type(e).__name__) from e


def _execute_caught(request: _Request, dispatch: Dispatch) -> dict[str, Any]:
    try:
        return reply_object(request, _execute(request, dispatch))
    except RpcError as e:
        return reply_object(request, error=e)


def _encode(value: Any) -> bytes:
    return (jsonenc.dumps(value) + "\n").encode()


def _error_reply(request: _Request, error: RpcError) -> Reply:
    status = HTTP_INTERNAL_SERVER_ERROR
    if error.code == RPC_INVALID_REQUEST:
        status = HTTP_BAD_REQUEST
    elif error.code == RPC_METHOD_NOT_FOUND:
        status = HTTP_NOT_FOUND
    return Reply(status, _encode(reply_object(request, error=error)))


def handle(body: bytes, dispatch: Dispatch) -> Reply:
    """The reply Bitcoin Core would give to a POSTed ``body``."""
    request = _Request()
    try:
        try:
            value = jsonenc.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RpcError(RPC_PARSE_ERROR, "Parse error") from None
        if isinstance(value, dict):
            _parse(value, request)
            if request.version is Version.V2:
                reply = _execute_caught(request, dispatch)
            else:
                reply = reply_object(request, _execute(request, dispatch))
            if request.is_notification:
                return Reply(HTTP_NO_CONTENT, None)
            return Reply(HTTP_OK, _encode(reply))
        if isinstance(value, list):
            replies = []
            for item in value:
                request = _Request()
                try:
                    _parse(item, request)
                    response = _execute_caught(request, dispatch)
                except RpcError as e:
                    response = reply_object(request, error=e)
                if not request.is_notification:
                    replies.append(response)
            if not replies and value:
                return Reply(HTTP_NO_CONTENT, None)
            return Reply(HTTP_OK, _encode(replies))
        raise RpcError(RPC_PARSE_ERROR, "Top-level object parse error")
    except RpcError as e:
        return _error_reply(request, e)
