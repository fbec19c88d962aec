"""
Socket options for channel connections.

TCP_NODELAY: every frame is written in one ``write``, and the protocol is strictly
request/response, so Nagle's algorithm only adds delay. TCP_QUICKACK: stock bitcoinj writes each
frame as two writes (length, then body) without TCP_NODELAY; if we delay our ACK of the first
write, its Nagle holds the second back until our delayed-ACK timer fires (~40 ms a message, the
11 payments/s the recordings show). Linux clears QUICKACK after it acts, so it is set again
after every read.
"""

from __future__ import annotations

import socket
from typing import Any

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def set_nodelay(transport: Any) -> None:
    handle = _socket(transport)
    if handle is not None:
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quickack(transport: Any) -> None:
    """Acknowledge the peer's segments at once (Linux; a no-op elsewhere)."""
    if _QUICKACK is None:
        return
    handle = _socket(transport)
    if handle is not None:
        try:
            handle.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass


def _socket(transport: Any) -> Any:
    get = getattr(transport, "getHandle", None)
    if get is None:
        return None
    handle = get()
    return handle if isinstance(handle, socket.socket) else None
