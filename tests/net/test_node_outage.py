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

from tcp_setup import SERVER_ID, Loopback
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.cli.channels import client_rows
from twisted_paychan.net.client import connect
from twisted_paychan.net.client_manager import ClientChannelManager
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


async def _open_fails(outage: Outage, client_chain: Any = None) -> tuple[ChannelClosed, bytes, ClientChannelManager]:
    """A client opens a channel while the server's node is out; its manager is returned once
    it has dealt with the failed opening."""
    net = outage.net
    chain = client_chain if client_chain is not None else net.chain
    manager = ClientChannelManager(net.client_wallet, chain, net.client_store, reactor)
    settings = ClientSettings(channel_value=500_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", net.port.getHost().port)
    with pytest.raises(ChannelClosed) as caught:
        await connect(reactor, endpoint, net.client_wallet, chain, net.client_store, settings, SERVER_ID,
                      net.client_key, manager=manager)
    await manager.failed_openings()
    records = await net.server_store.server_channels()
    assert len(records) == 1
    return caught.value, records[0].contract_txid, manager


async def _retry(outage: Outage) -> None:
    """One retry tick of the server's timers, and the poll that follows it."""
    outage.clock.advance(RETRY)
    assert outage.rpc is not None
    await outage.rpc.poll()


@pytest.mark.parametrize("how", ["unreachable", "401"])
@pytest_twisted.ensureDeferred
async def test_a_node_outage_while_a_client_opens_is_the_servers_problem(tmp_path: Path, how: str) -> None:
    """The client's own node answers: it does not know the contract, so the client takes its
    coins back at once; the server, its node back (a new cookie), finds the contract refused
    and marks it contract-failed. Both records say what happened."""
    outage = Outage(tmp_path)
    await outage.start()
    try:
        net = outage.net
        first_cookie = read_cookie(outage.cookie_dir / ".cookie").password
        before = (await net.client_wallet.balance()).total
        await outage.node_down()
        if how == "401":  # the node is back with credentials we do not have
            await outage.node_up(user="someone", password="else")
        closed, txid, _ = await _open_fails(outage)
        assert closed.reason is CloseReason.REMOTE_SENT_ERROR
        assert "the server's node is unavailable" in str(closed)
        kept = await net.server_store.server_channel(txid)
        assert kept.state is ServerChannelState.OPEN  # kept, noted pending (a restart goes on retrying)
        assert kept.note.startswith("contract pending: the node was unavailable (")
        health = chain_health(outage.rpc)
        expected = ChainHealthState.UNREACHABLE if how == "unreachable" else ChainHealthState.AUTH_REFUSED
        assert health.state is expected and health.failures >= 1
        # The client: the contract is unknown to its node, so the coins came back.
        client = await net.client_store.client_channel(txid)
        assert client.state is ClientChannelState.FAILED
        assert client.note.startswith("opening failed: ") and "the server's node is unavailable" in client.note
        assert client.close_tx is not None
        reclaim_txid = txid_of(client.close_tx)
        assert (await net.chain.tx_status(reclaim_txid)).state is TxState.MEMPOOL
        after = (await net.client_wallet.balance()).total
        assert 0 < before - after < 2_000  # the reclaim's fee, nothing locked
        rows = client_rows([client])
        assert (rows[0]["state"], rows[0]["closing_txid"]) == ("failed", display_hex(reclaim_txid))
        # Still down at the first retry: nothing changes.
        with pytest.raises(Exception):
            await _retry(outage)
        assert (await net.server_store.server_channel(txid)).state is ServerChannelState.OPEN
        # Restarted with a new cookie (read again after the 401): the contract is judged now,
        # and refused: the reclaim took its inputs and pays more.
        if outage.server is not None:
            await outage.server.stop()
        await outage.node_up()
        assert read_cookie(outage.cookie_dir / ".cookie").password != first_cookie
        await _retry(outage)
        await _retry(outage)
        assert chain_health(outage.rpc).state is ChainHealthState.OK
        server = await net.server_store.server_channel(txid)
        assert server.state is ServerChannelState.CONTRACT_FAILED
        assert server.note.startswith("contract rejected by the node: insufficient fee, rejecting replacement ")
        assert (await net.chain.tx_status(txid)).state is TxState.UNKNOWN
        changes = outage.lines("will keep trying")
        assert [e["state"] for e in changes] == [expected.value]  # once per change of state
        assert len(outage.lines("answers again")) == 1
    finally:
        await outage.stop()


@pytest_twisted.ensureDeferred
async def test_a_pending_contract_goes_out_when_the_node_is_back(tmp_path: Path) -> None:
    """The client shares the server's node and cannot ask it either: nothing is decided, the
    channel stays open on both sides, and the server's retry puts the contract in the mempool
    once the node answers."""
    outage = Outage(tmp_path)
    await outage.start()
    try:
        net = outage.net
        await outage.node_down()
        closed, txid, manager = await _open_fails(outage, client_chain=outage.rpc)
        assert "the server's node is unavailable" in str(closed)
        assert (await net.client_store.client_channel(txid)).state is ClientChannelState.OPEN
        assert (await net.server_store.server_channel(txid)).state is ServerChannelState.OPEN
        await outage.node_up()
        await _retry(outage)
        assert (await net.chain.tx_status(txid)).state is TxState.MEMPOOL
        taken = await net.server_store.server_channel(txid)
        assert (taken.state, taken.note) == (ServerChannelState.OPEN, "")  # as any other channel now
        manager.stop()
    finally:
        await outage.stop()
