"""Socket-level details of the TCP protocols (``net.tcp``): frames handed to the socket at once,
with whatever it does not take queued in order; QUICKACK exactly when a read ends inside a
frame."""

import struct

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.testing import StringTransport

from twisted_paychan.net import client as net_client
from twisted_paychan.net import server as net_server
from twisted_paychan.net import tcp
from twisted_paychan.net.tcp import send_now
from twisted_paychan.twisted_private import queued_bytes
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.framing import MessageProtocol, encode_frame


class Collect(protocol.Protocol):
    def __init__(self, want: int) -> None:
        self.data = bytearray()
        self.want = want
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.want and not self.done.called:
            self.done.callback(bytes(self.data))


class Sender(protocol.Protocol):
    def __init__(self) -> None:
        self.made: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)


@pytest_twisted.ensureDeferred
async def test_send_now_writes_at_once_and_queues_the_rest_in_order():
    blob = bytes(range(256)) * 40_000  # ~10 MB: more than the socket takes in one go
    small = [b"frame-%d" % i for i in range(50)]
    want = sum(map(len, small)) + len(blob) + len(small[0])
    receiver = Collect(want)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(lambda: receiver))
    try:
        sender = Sender()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(lambda: sender))
        await sender.made
        transport = sender.transport
        for frame in small:
            send_now(transport, frame)
            # Nothing queued: each small frame went straight to the socket.
            assert queued_bytes(transport) == 0
        send_now(transport, blob)
        assert queued_bytes(transport) > 0, "the socket cannot take 10 MB at once"
        send_now(transport, small[0])  # must queue behind the rest of the blob, not overtake it
        got = await receiver.done
        assert got == b"".join(small) + blob + small[0]
        transport.loseConnection()
    finally:
        await port.stopListening()


def test_send_now_uses_write_for_other_transports():
    t = StringTransport()
    send_now(t, b"abc")
    assert t.value() == b"abc"


@pytest.mark.parametrize("cls", [net_server.ServerChannelProtocol, net_client.ClientChannelProtocol])
def test_quickack_only_when_a_read_ends_inside_a_frame(monkeypatch, cls):
    calls = []
    monkeypatch.setattr(tcp, "quickack", lambda transport: calls.append(transport))
    proto = object.__new__(cls)
    MessageProtocol.__init__(proto)
    proto.messageReceived = lambda msg: None
    proto.transport = StringTransport()
    frame = encode_frame(m.payment_ack(None))
    proto.dataReceived(frame)
    proto.dataReceived(frame + frame)
    assert calls == []
    proto.dataReceived(frame[:4])  # bitcoinj: the length alone, the body after our ACK
    assert len(calls) == 1
    proto.dataReceived(frame[4:])
    assert len(calls) == 1
    proto.dataReceived(struct.pack("!i", 3) + b"\x08")
    assert len(calls) == 2
