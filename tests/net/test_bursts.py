"""Frames written during a burst (``twisted_paychan.bursts``: a group commit's delivery, one
read) leave a connection in one write, in order, before any last frame of a close; the group
commit of our server covers every payment of one read."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.testing import StringTransport

from tcp_setup import Loopback
from twisted_paychan.bursts import burst
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net import client as net_client
from twisted_paychan.net import server as net_server
from twisted_paychan.net import tcp
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.framing import MessageProtocol, encode_frame

VALUE = 2_000_000


class Writes(StringTransport):
    """A transport that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def _protocol(cls: Any) -> Any:
    proto = object.__new__(cls)
    MessageProtocol.__init__(proto)
    proto.transport = Writes()
    proto.connected = True
    return proto


ACK = m.payment_ack(b"one")
ACK2 = m.payment_ack(b"two")


@pytest.mark.parametrize("cls", [net_server.ServerChannelProtocol, net_client.ClientChannelProtocol])
def test_frames_of_a_burst_leave_in_one_write(cls: Any) -> None:
    proto = _protocol(cls)
    with burst:
        proto.sendMessage(ACK)
        with burst:  # nested: only the outermost releases
            proto.sendMessage(ACK2)
        proto.sendMessage(ACK)
        assert proto.transport.writes == []
    assert proto.transport.writes == [encode_frame(ACK) + encode_frame(ACK2) + encode_frame(ACK)]
    proto.sendMessage(ACK2)  # outside a burst: at once, on its own
    assert proto.transport.writes[1:] == [encode_frame(ACK2)]


def test_a_close_during_a_burst_writes_the_held_frames_before_its_last_frame() -> None:
    proto = _protocol(net_server.ServerChannelProtocol)
    proto.channel = None
    with burst:
        proto.sendMessage(ACK)
        proto.disconnect("done", m.close())
        proto.sendMessage(ACK2)  # after the close: dropped
    assert proto.transport.value() == encode_frame(ACK) + encode_frame(m.close())
    assert proto.transport.disconnecting


def test_frames_held_when_the_connection_is_lost_are_dropped() -> None:
    proto = _protocol(net_client.ClientChannelProtocol)
    proto.channel = type("Gone", (), {"connection_lost": lambda self, *a: None})()
    with burst:
        proto.sendMessage(ACK)
        tcp.ChannelStreamProtocol.connectionLost(proto)
    assert proto.transport.writes == []


def _frames(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    while at < len(data):
        (length,) = struct.unpack_from("!i", data, at)
        out.append(data[at + 4:at + 4 + length])
        at += 4 + length
    return out


@pytest_twisted.ensureDeferred
async def test_pipelined_acks_share_writes_and_each_read_one_sync(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against our server over loopback: the acks of one group commit leave in one write, and
    no read's payments need more than one sync (commits <= reads that carried updates)."""
    server_writes: list[int] = []
    update_reads = 0
    real_send_now = tcp.send_now
    real_received = net_server.ServerChannelProtocol.dataReceived
    real_message = net_server.ServerChannelProtocol.messageReceived
    updates: list[Any] = []

    def counting_send_now(transport: Any, data: bytes) -> None:
        if any(m.decode_message(f).type == m.MessageType.PAYMENT_ACK for f in _frames(data)):
            server_writes.append(len(_frames(data)))
        real_send_now(transport, data)

    def counting_received(self: Any, data: bytes) -> None:
        nonlocal update_reads
        before = len(updates)
        real_received(self, data)
        update_reads += len(updates) > before

    def counting_message(self: Any, msg: Any) -> None:
        if msg.type == m.MessageType.UPDATE_PAYMENT:
            updates.append(msg)
        real_message(self, msg)

    monkeypatch.setattr(tcp, "send_now", counting_send_now)
    monkeypatch.setattr(net_server.ServerChannelProtocol, "dataReceived", counting_received)
    monkeypatch.setattr(net_server.ServerChannelProtocol, "messageReceived", counting_message)
    net = Loopback(tmp_path)
    await net.start()
    try:
        settings = ClientSettings(channel_value=VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000,
                                  max_in_flight=32)
        conn = await net.connect(settings)
        await conn.pay(100)  # the channel is settled in: what follows are payments only
        commits, update_reads, server_writes[:] = net.server_store.commits, 0, []
        pending = [conn.pay(100) for _ in range(32)]
        for d in pending:
            await d
        acks = sum(server_writes)
        assert acks >= 32
        assert len(server_writes) < acks, f"every ack in a write of its own: {server_writes}"
        assert max(server_writes) > 1
        assert 0 < net.server_store.commits - commits <= update_reads < 32, (update_reads, server_writes)
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()
