"""
Socket-level details of channel connections.

TCP_NODELAY: every frame is written in one ``write``, and the protocol is strictly
request/response, so Nagle's algorithm only adds delay. TCP_QUICKACK: stock bitcoinj writes each
frame as two writes (length, then body) without TCP_NODELAY; if we delay our ACK of the first
write, its Nagle holds the second back until our delayed-ACK timer fires (~40 ms a message, the
11 payments/s the recordings show). Setting QUICKACK sends an ACK that is being held back at once
(Linux), so the protocols set it whenever a read ends inside a frame: exactly the moment a
bitcoinj peer waits for it. A peer that writes whole frames never leaves us there, and pays no
extra system call.

Bursts (``twisted_paychan.bursts``): the frames a connection writes while a burst is delivered
(a group commit's acks or updates, one read's answers) are held and written together when it
ends, one ``send`` instead of one per frame; outside a burst a frame is written at once.

``send_now``: Twisted's ``transport.write`` only queues; the bytes leave in a later turn of the
reactor, after two ``epoll_ctl`` calls and a wake-up. A payment is one small frame each way, so
when nothing is queued the frame is handed to the socket at once (what Twisted itself does a
turn later), and only what the socket does not take is queued.
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from twisted_paychan.bursts import burst, hold
from twisted_paychan.twisted_private import write_unqueued
from twisted_paychan.wire.framing import MessageProtocol

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


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, straight to the socket when nothing is queued before it.

    Only Twisted's own TCP connections can be written to directly
    (:func:`twisted_private.write_unqueued`); anything else (TLS, test transports), and whatever
    the socket does not take or a write that fails, goes through ``transport.write``, which
    keeps the order and reports a broken connection the usual way.
    """
    sent = write_unqueued(transport, data)
    if sent < len(data):
        transport.write(data[sent:] if sent else data)


class ChannelStreamProtocol(MessageProtocol):
    """What the server's and the client's TCP protocols share: frames go out through
    :func:`send_now`, QUICKACK is set when a read ends inside a frame, and each message goes to
    the connection's channel object (``self.channel``, set by the subclass)."""

    channel: Any = None
    #: Frames held during a burst (None: nothing held, the next frame may go at once).
    _held: Optional[list[bytes]] = None

    def dataReceived(self, data: bytes) -> None:
        with burst:  # the answers to several messages of one read leave together
            super().dataReceived(data)
        if self.inFrame:
            quickack(self.transport)

    def writeFrame(self, frame: bytes) -> None:
        held = self._held
        if held is not None:
            held.append(frame)
        elif hold(self.flushFrames):
            self._held = [frame]
        else:
            send_now(self.transport, frame)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._held = None  # nobody will read them
        super().connectionLost(reason)

    def flushFrames(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            send_now(self.transport, held[0] if len(held) == 1 else b"".join(held))

    def messageReceived(self, msg: Any) -> None:
        assert self.channel is not None
        self.channel.message_received(msg)
