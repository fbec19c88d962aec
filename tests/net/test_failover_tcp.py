"""Client fail-over over loopback TCP, in one process: two server factories (two nodes) on one
SQLite store and wallet, the embedded regtest chain. Node A's port closes and its connections are
aborted mid-stream (as the kernel does for a killed process); the client resumes the same
channel on node B, goes on paying, and B settles it with every payment the client made."""

from __future__ import annotations

from typing import Any, Optional

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from tcp_setup import SERVER_ID, Loopback
from twisted_paychan.channel.errors import ChannelClosed
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.client import connect
from twisted_paychan.net.failover import AllEndpointsFailed, Backoff, FailoverConnection, NamedEndpoint
from twisted_paychan.net.server import PaymentChannelServerFactory

VALUE = 1_000_000


class Node(PaymentChannelServerFactory):
    """A server factory that remembers its connections, so that the test can kill them."""

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.__dict__.setdefault("protocols", []).append(protocol)
        return protocol

    def kill(self) -> None:
        for protocol in self.__dict__.get("protocols", []):
            if protocol.transport is not None:
                protocol.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_a_client_resumes_on_node_b_when_node_a_dies(tmp_path):
    net = Loopback(tmp_path)
    await net.start()
    net.factory = Node(net.server_wallet, net.chain, net.server_store, net.server_settings, reactor)
    node_b = Node(net.server_wallet, net.chain, net.server_store, net.server_settings, reactor)
    port_a = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(net.factory)
    port_b = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(node_b)
    endpoints = [NamedEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", p.getHost().port), name)
                 for p, name in ((port_a, "a"), (port_b, "b"))]
    settings = ClientSettings(channel_value=VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000, max_in_flight=8)
    try:
        conn = await connect(reactor, endpoints, net.client_wallet, net.chain, net.client_store, settings, SERVER_ID)
        assert isinstance(conn, FailoverConnection) and conn.endpoint == "a"
        acked = 0
        for _ in range(10):
            acked += (await conn.pay(1000)).amount
        in_flight = [conn.pay(1000) for _ in range(8)]
        await port_a.stopListening()
        net.factory.kill()
        lost = 0
        for d in in_flight:
            try:
                acked += (await d).amount
            except ChannelClosed:
                lost += 1000
        for _ in range(10):
            acked += (await conn.pay(1000)).amount
        assert conn.endpoint == "b" and conn.failovers == 1
        paid = VALUE - conn.record.client_change
        assert paid == 1000 + acked + lost  # the initial payment, the acknowledged ones, the lost ones
        settlement = await conn.settle()
        assert settlement
        record = await net.server_store.server_channel(conn.contract_txid)
        assert record.best_value == paid
        assert record.state in (ServerChannelState.SETTLING, ServerChannelState.SETTLED)
    finally:
        await port_b.stopListening()
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_no_server_answering_is_one_clear_error(tmp_path):
    net = Loopback(tmp_path)
    await net.start()
    await net.port.stopListening()
    net.port = None
    dead = [NamedEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", p), f"tcp:127.0.0.1:{p}")
            for p in (_closed_port(), _closed_port())]
    settings = ClientSettings(channel_value=VALUE, fee_rate=1000)
    try:
        failover = FailoverConnection.open(reactor, dead, net.client_wallet, net.client_store,
                                           _manager(net), settings, SERVER_ID, None,
                                           _protocol_class(), Backoff(first=0.01, most=0.01, rounds=2))
        try:
            await failover
            raise AssertionError("connected to nothing")
        except AllEndpointsFailed as e:
            assert str(e).startswith("every server failed (2 rounds of 2 endpoints): tcp:127.0.0.1:")
            assert "Connection refused" in str(e) or "refused" in str(e)
    finally:
        await net.stop()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _manager(net: Loopback) -> Any:
    from twisted_paychan.net.client_manager import ClientChannelManager

    return ClientChannelManager(net.client_wallet, net.chain, net.client_store, reactor)


def _protocol_class() -> Optional[type]:
    from twisted_paychan.net.client import ClientChannelProtocol

    return ClientChannelProtocol
