"""Peers that behave the way stock bitcoinj does on the wire: a client that writes the 4-byte
length and the body as two separate writes, with Nagle's algorithm left on (no TCP_NODELAY),
and a v1-only server that drops a client asking for another major."""

from __future__ import annotations

import socket
import struct
from typing import Any, Optional

from twisted.internet.interfaces import IAddress

from twisted_paychan.net.client import ClientChannelProtocol
from twisted_paychan.net.server import PaymentChannelServerFactory, ServerChannelProtocol
from twisted_paychan.net.server_channel import NullServerHandler
from twisted_paychan.wire.messages import MessageType as MT
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



class BitcoinjV1OnlyServerProtocol(ServerChannelProtocol):
    """A server that, like a stock bitcoinj server limited to version 1, never offers a lower
    major: a CLIENT_VERSION asking for another one ends the connection with nothing on the wire
    (bitcoinj's ERROR{NO_ACCEPTABLE_VERSION} is lost as it closes, recording c2). A v1 request
    is served as usual."""

    def messageReceived(self, msg: Any) -> None:
        if msg.type == MT.CLIENT_VERSION and msg.client_version.major != 1:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        super().messageReceived(msg)


class BitcoinjV1OnlyServerFactory(PaymentChannelServerFactory):
    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[ServerChannelProtocol]:
        return BitcoinjV1OnlyServerProtocol(self, NullServerHandler())


class BitcoinjExhaustingServerProtocol(ServerChannelProtocol):
    """A server that, like stock bitcoinj, loses what it writes right before it closes on an
    exhausted channel: the exhausting payment's PAYMENT_ACK and its CLOSE{settlement} (§7.3
    step 4, §1.4; recordings f_v2_exhaust and g_v1_exhaust). It stores the payment and
    broadcasts the settlement as usual; the client sees only EOF."""

    exhausting = False

    def messageReceived(self, msg: Any) -> None:
        if msg.type == MT.UPDATE_PAYMENT and msg.update_payment.client_change_value == 0:
            self.exhausting = True
        super().messageReceived(msg)

    def sendMessage(self, msg: Any) -> None:
        if self.exhausting and msg.type in (MT.PAYMENT_ACK, MT.CLOSE):
            return
        super().sendMessage(msg)


class BitcoinjExhaustingServerFactory(PaymentChannelServerFactory):
    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[ServerChannelProtocol]:
        return BitcoinjExhaustingServerProtocol(self, NullServerHandler())


class BitcoinjStyleServerProtocol(ServerChannelProtocol):
    """A server that writes like stock bitcoinj: each frame as two writes (length, then body),
    Nagle's algorithm on, no quick ACKs. Payments are handled in order and each acknowledged,
    as bitcoinj's ``receiveUpdatePaymentMessage`` does with several in flight."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.getHandle().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # type: ignore[union-attr]

    def writeFrame(self, frame: bytes) -> None:
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        # Two writes straight to the socket, as bitcoinj's NIO code does (frames here are small).
        sock.sendall(frame[:4])
        sock.sendall(frame[4:])

    def dataReceived(self, data: bytes) -> None:
        MessageProtocol.dataReceived(self, data)


class BitcoinjStyleServerFactory(PaymentChannelServerFactory):
    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[ServerChannelProtocol]:
        return BitcoinjStyleServerProtocol(self, NullServerHandler())
