"""The server's node is down, or refuses our credentials, while a client opens a channel: the
server's problem, said so (ERROR OTHER "the server's node is unavailable", closed as the
server's), the channel kept OPEN (not resumable) and its contract broadcast again until the node
answers. The node is the embedded one behind its real RPC server, restarted with a new cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from tcp_setup import Loopback
from twisted_paychan.chain.embedded.rpc.server import RpcServer, serve_node
from twisted_paychan.chain.health import ChainHealthState, chain_health
from twisted_paychan.chain.rpc.chain import RpcChain
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel import server_lifecycle as lc
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.net.server import PaymentChannelServerFactory
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.rpc.auth import read_cookie

LOOPBACK = "tcp:0:interface=127.0.0.1"
RETRY = 10.0


class Outage:
    """A Loopback whose server reaches the node only through its RPC server (cookie auth)."""

    def __init__(self, tmp: Path) -> None:
        self.net = Loopback(tmp)
        self.cookie_dir = tmp / "rpc"
        self.cookie_dir.mkdir()
        self.clock = Clock()
        self.clock.advance(reactor.seconds())  # type: ignore[attr-defined]
        self.server: RpcServer | None = None
        self.port_number = 0
        self.rpc: RpcChain | None = None
        self.logged: list[dict[str, Any]] = []

    async def start(self) -> None:
        self.server = await serve_node(reactor, self.net.chain.node, LOOPBACK, cookie_dir=self.cookie_dir)
        self.port_number = self.server.port_number
        self.rpc = RpcChain.from_url(reactor, self.server.url, cookie_path=self.cookie_dir / ".cookie",
                                     clock=self.clock)
        await self.rpc.start()
        settings = ServerSettings(fee_rate=1000)
        policy = lc.LifecyclePolicy(fee_rate=1000, contract_retry_interval=RETRY)
        manager = ServerChannelManager(self.net.server_wallet, self.rpc, self.net.server_store, settings,
                                       self.clock, policy)
        self.net.factory = PaymentChannelServerFactory(self.net.server_wallet, self.rpc, self.net.server_store,
                                                       settings, reactor, manager=manager)
        await self.net.start()
        globalLogPublisher.addObserver(self.logged.append)

    async def node_down(self) -> None:
        assert self.server is not None
        await self.server.stop()
        await self.rpc.connection.close()  # type: ignore[union-attr]
        self.server = None

    async def node_up(self, **credentials: str) -> None:
        self.server = await serve_node(reactor, self.net.chain.node, f"tcp:{self.port_number}:interface=127.0.0.1",
                                       cookie_dir=self.cookie_dir, **credentials)

    async def stop(self) -> None:
        globalLogPublisher.removeObserver(self.logged.append)
        assert self.rpc is not None
        await self.rpc.stop()
        if self.server is not None:
            await self.server.stop()
        await self.net.stop()

    def lines(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.logged if text in e.get("log_format", "")]


async def _open_fails(outage: Outage) -> tuple[ChannelClosed, bytes]:
    settings = ClientSettings(channel_value=500_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
    with pytest.raises(ChannelClosed) as caught:
        await outage.net.connect(settings)
    records = await outage.net.server_store.server_channels()
    assert len(records) == 1
    return caught.value, records[0].contract_txid


async def _retry(outage: Outage) -> None:
    """One retry tick of the server's timers, and the poll that follows it."""
    outage.clock.advance(RETRY)
    assert outage.rpc is not None
    await outage.rpc.poll()


@pytest.mark.parametrize("how", ["unreachable", "401"])
@pytest_twisted.ensureDeferred
async def test_a_node_outage_while_a_client_opens_is_the_servers_problem(tmp_path: Path, how: str) -> None:
    outage = Outage(tmp_path)
    await outage.start()
    try:
        first_cookie = read_cookie(outage.cookie_dir / ".cookie").password
        await outage.node_down()
        if how == "401":  # the node is back with credentials we do not have
            await outage.node_up(user="someone", password="else")
        closed, txid = await _open_fails(outage)
        assert closed.reason is CloseReason.REMOTE_SENT_ERROR
        assert "the server's node is unavailable" in str(closed)
        record = await outage.net.server_store.server_channel(txid)
        assert record.state is ServerChannelState.OPEN  # kept, not contract-failed
        assert (await outage.net.chain.tx_status(txid)).state is TxState.UNKNOWN
        health = chain_health(outage.rpc)
        expected = ChainHealthState.UNREACHABLE if how == "unreachable" else ChainHealthState.AUTH_REFUSED
        assert health.state is expected and health.failures >= 1
        # Still down at the first retry: nothing changes, nothing more is logged about the state.
        with pytest.raises(Exception):
            await _retry(outage)
        assert (await outage.net.server_store.server_channel(txid)).state is ServerChannelState.OPEN
        # Restarted with a new cookie: read again after the 401, the contract goes out.
        if outage.server is not None:
            await outage.server.stop()
        await outage.node_up()
        assert read_cookie(outage.cookie_dir / ".cookie").password != first_cookie
        await _retry(outage)
        await _retry(outage)
        assert (await outage.net.chain.tx_status(txid)).state is TxState.MEMPOOL
        assert chain_health(outage.rpc).state is ChainHealthState.OK
        assert (await outage.net.server_store.server_channel(txid)).state is ServerChannelState.OPEN
        changes = outage.lines("will keep trying")
        assert [e["state"] for e in changes] == [expected.value]  # once per change of state
        assert len(outage.lines("answers again")) == 1
    finally:
        await outage.stop()
