"""Pipelined payments (``ClientSettings.max_in_flight``) over loopback TCP with SQLite stores on
both sides: against our server (which stores the payments of one read with one sync) and against
a server that writes like stock bitcoinj (two writes per frame, Nagle on). Each ``pay()`` fires
with its own PAYMENT_ACK, in order; an ERROR or a disconnect fails every payment in flight."""

from __future__ import annotations

from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet import defer

from bitcoinj_style import BitcoinjStyleServerProtocol
from tcp_setup import Loopback
from twisted_paychan.channel.errors import ChannelClosed, ChannelUsageError, CloseReason
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.server_channel import NullServerHandler

VALUE = 2_000_000


def _settings(window: int, version: VersionSelector = VersionSelector.VERSION_2) -> ClientSettings:
    return ClientSettings(channel_value=VALUE, versions=version, fee_rate=1000, max_in_flight=window)


async def _pay_windowed(conn: Any, count: int, window: int, amount: int = 100) -> list[int]:
    """``count`` payments with up to ``window`` in flight; the order their Deferreds fired."""
    fired: list[int] = []
    pending: list[defer.Deferred[Any]] = []
    for i in range(count):
        d = conn.pay(amount, i.to_bytes(4, "big"))
        d.addCallback(lambda ack, i=i: fired.append(i))
        pending.append(d)
        if len(pending) - len(fired) >= window:
            await pending[len(fired)]
    await defer.gatherResults(pending)
    return fired


@pytest.mark.parametrize("version", [VersionSelector.VERSION_1, VersionSelector.VERSION_2])
@pytest_twisted.ensureDeferred
async def test_pipelined_payments_against_our_server(tmp_path, version):
    net = Loopback(tmp_path)
    await net.start()
    try:
        conn = await net.connect(_settings(32, version))
        initial = VALUE - conn.record.client_change
        commits = net.server_store.commits
        fired = await _pay_windowed(conn, 300, 32)
        assert fired == list(range(300))
        server = await net.server_store.server_channel(conn.contract_txid)
        client = await net.client_store.client_channel(conn.contract_txid)
        assert server.best_value == initial + 300 * 100
        assert client.client_change == VALUE - server.best_value
        # Group commit: the payments of one read share a sync.
        assert net.server_store.commits - commits < 300
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_pipelined_payments_against_a_bitcoinj_style_server(tmp_path):
    net = Loopback(tmp_path)
    net.factory.buildProtocol = lambda addr: BitcoinjStyleServerProtocol(net.factory, NullServerHandler())
    await net.start()
    try:
        conn = await net.connect(_settings(16))
        initial = VALUE - conn.record.client_change
        fired = await _pay_windowed(conn, 120, 16)
        assert fired == list(range(120))
        assert (await net.server_store.server_channel(conn.contract_txid)).best_value == initial + 120 * 100
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_each_ack_carries_its_own_info(tmp_path):
    class Echo(NullServerHandler):
        def payment_received(self, contract_txid: bytes, increase: int, total: int,
                             info: Optional[bytes]) -> Optional[bytes]:
            return b"ack:" + (info or b"")

    net = Loopback(tmp_path)
    net.factory.handler_factory = lambda addr: Echo()
    await net.start()
    try:
        conn = await net.connect(_settings(8))
        ds = [conn.pay(10 + i, bytes([i])) for i in range(8)]
        acks = await defer.gatherResults(ds)
        assert [a.info for a in acks] == [b"ack:" + bytes([i]) for i in range(8)]
        assert [a.amount for a in acks] == [10 + i for i in range(8)]
        with pytest.raises(ChannelUsageError):
            for _ in range(9):
                conn.pay(1)
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_an_error_fails_every_payment_in_flight(tmp_path):
    class RefusesTheFifth(NullServerHandler):
        def payment_received(self, contract_txid: bytes, increase: int, total: int,
                             info: Optional[bytes]) -> None:
            if info == b"refuse":
                raise ValueError("not this one")

    net = Loopback(tmp_path)
    net.factory.handler_factory = lambda addr: RefusesTheFifth()
    await net.start()
    try:
        conn = await net.connect(_settings(20))
        ds = [conn.pay(100, b"refuse" if i == 4 else None) for i in range(12)]
        results = await defer.DeferredList(ds, consumeErrors=True)
        assert [ok for ok, _ in results[:4]] == [True] * 4
        for ok, failure in results[4:]:
            assert not ok and failure.check(ChannelClosed)
            assert failure.value.reason is CloseReason.REMOTE_SENT_ERROR
        await conn.channel.closed
        # Everything sent had its c stored first: the client never owes less than the server holds.
        server = await net.server_store.server_channel(conn.contract_txid)
        client = await net.client_store.client_channel(conn.contract_txid)
        assert client.client_change <= VALUE - server.best_value
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_a_disconnect_fails_every_payment_in_flight(tmp_path):
    net = Loopback(tmp_path)
    await net.start()
    try:
        conn = await net.connect(_settings(10))
        ds = [conn.pay(100) for _ in range(10)]
        conn.disconnect()
        results = await defer.DeferredList(ds, consumeErrors=True)
        assert all(not ok and f.check(ChannelClosed) for ok, f in results)
        # Resumed later, the next payment covers whatever the server never acknowledged.
        again = await net.connect(_settings(10))
        assert again.resumed
        await again.pay(100)
        server = await net.server_store.server_channel(conn.contract_txid)
        client = await net.client_store.client_channel(conn.contract_txid)
        assert client.client_change == VALUE - server.best_value
        again.disconnect()
        await again.channel.closed
    finally:
        await net.stop()
