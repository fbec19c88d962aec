"""A client that writes frames the way stock bitcoinj does: the 4-byte length and the body as
two separate writes, with Nagle's algorithm left on (no TCP_NODELAY)."""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted_paychan.net.client import ClientChannelProtocol
from twisted_paychan.wire.framing import MessageProtocol


class BitcoinjStyleProtocol(ClientChannelProtocol):
    def connectionMade(self) -> None:
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        channel_factory = self._channel_factory
        self.channel = channel_factory(self.sendMessage, self._channel_closed)
        self.channel.opened.addCallback(self._opened)
        self.channel.start()

    def sendString(self, string: bytes) -> None:
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        # Two writes straight to the socket, as bitcoinj's NIO code does.
        sock.send(struct.pack("!i", len(string)))
        sock.send(string)

    def dataReceived(self, data: bytes) -> None:
        # bitcoinj does not ask for quick ACKs either.
        MessageProtocol.dataReceived(self, data)

