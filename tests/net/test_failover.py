"""Client fail-over (``net/failover``) in memory: two server nodes (two managers and factories)
on one shared store and wallet, as two processes on one database are; a client given both
endpoints; connections joined by ``twisted.test.iosim`` and every timer on a ``task.Clock``. A
node is "killed" by dropping its connection with whatever it had not yet read or written."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.test import iosim
from zope.interface import implementer
from twisted.internet.interfaces import IStreamClientEndpoint

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.net.client import connect
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.net.failover import AllEndpointsFailed, Backoff, FailoverConnection, NamedEndpoint, Resumed
from twisted_paychan.net.server import PaymentChannelServerFactory
from twisted_paychan.store.memory import MemoryChannelStore
from twisted_paychan.wallet.memory import MemoryWallet

START = 1_700_000_000
SERVER_ID = hashlib.sha256(b"cluster").digest()
VALUE = 1_000_000


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """A server node's address: each connect joins the client's protocol to a new protocol of
    the node's factory in memory, or is refused while the node is down."""

    def __init__(self, net: "Net", factory: Optional[PaymentChannelServerFactory]) -> None:
        self.net = net
        self.factory = factory
        self.up = True
        #: The node drops each connection as soon as a payment arrives on it, unanswered.
        self.drops_payments = False
        self.attempts: list[float] = []
        self.pumps: list[iosim.IOPump] = []

    def connect(self, client_factory: Any) -> defer.Deferred[Any]:
        self.attempts.append(self.net.clock.seconds())
        if not self.up or self.factory is None:
            return defer.fail(ConnectionRefusedError("node down"))
        client = client_factory.buildProtocol(None)
        server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000 + len(self.pumps)))
        pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client),
                             greet=False, clock=self.net.clock)
        self.pumps.append(pump)
        self.net.pumps.append(pump)
        return defer.succeed(client)

    def drop_payments(self, pump: iosim.IOPump) -> None:
        channel = getattr(pump.client, "channel", None)
        if (self.drops_payments and channel is not None and channel.opened.called and pump.clientIO.stream
                and not pump.serverIO.disconnecting):
            pump.clientIO.getOutBuffer()
            pump.serverIO.getOutBuffer()
            pump.serverIO.disconnecting = True

    def kill(self, delivered: bool = False) -> None:
        """The node dies: it never writes again; what the client had written reaches it only
        if ``delivered`` (its store then has the payments, and their acks are lost)."""
        self.up = False
        for pump in self.pumps:
            if delivered:
                pump.serverIO.bufferReceived(pump.clientIO.getOutBuffer())
            pump.clientIO.getOutBuffer()
            pump.serverIO.getOutBuffer()
            pump.serverIO.disconnecting = True
        self.net.run(defer.Deferred())  # the client notices


class Net:
    def __init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(START)
        self.chain = MemoryChain(self.clock)
        self.server_wallet = MemoryWallet(self.chain)
        self.client_wallet = MemoryWallet(self.chain)
        self.server_store = MemoryChannelStore()  # one database for both nodes
        self.client_store = MemoryChannelStore()
        address = self._fire(self.client_wallet.new_address())
        self.chain.credit(address_to_script(address, REGTEST), 50_000_000)
        self.chain.mine(1)
        self.pumps: list[iosim.IOPump] = []
        self.nodes = {name: MemoryEndpoint(self, self._factory(self.server_store)) for name in ("a", "b")}
        self.client_manager = ClientChannelManager(self.client_wallet, self.chain, self.client_store, self.clock)

    def _factory(self, store: MemoryChannelStore) -> PaymentChannelServerFactory:
        return PaymentChannelServerFactory(self.server_wallet, self.chain, store, ServerSettings(fee_rate=1000),
                                           self.clock)

    def stranger(self) -> MemoryEndpoint:
        """A node on another database: it does not know the client's channel."""
        return MemoryEndpoint(self, self._factory(MemoryChannelStore()))

    def endpoints(self, *names: str) -> list[NamedEndpoint]:
        return [NamedEndpoint(self.nodes[n], n) for n in names]

    def connect(self, endpoints: list[Any], backoff: Backoff = Backoff()) -> defer.Deferred[FailoverConnection]:
        settings = ClientSettings(channel_value=VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000,
                                  max_in_flight=8)
        d: defer.Deferred[FailoverConnection] = connect(self.clock, endpoints, self.client_wallet, self.chain,
                                                        self.client_store, settings, SERVER_ID,
                                                        manager=self.client_manager)
        return d

    def run(self, d: defer.Deferred[Any], seconds: float = 0.0) -> None:
        """Deliver everything, letting ``seconds`` of clock time pass in steps of 1/4 s."""
        for _ in range(int(seconds * 4) if seconds else 50):
            self._deliver()
            self.clock.advance(0.25 if seconds else 0)
            if d.called and not seconds:
                return
        self._deliver()

    def _deliver(self) -> None:
        """One exchange at a time on every connection, until none moves anything."""
        for _ in range(10_000):
            moved = False
            for node in self.nodes.values():
                for pump in node.pumps:
                    node.drop_payments(pump)
            for pump in list(self.pumps):
                moved = pump.pump() or moved
            if not moved:
                return
        raise AssertionError("the connections never went quiet")

    @staticmethod
    def _fire(d: defer.Deferred[Any]) -> Any:
        out: list[Any] = []
        d.addBoth(out.append)
        assert out, "the Deferred has not fired"
        if hasattr(out[0], "raiseException"):
            out[0].raiseException()
        return out[0]

    def result(self, d: defer.Deferred[Any], seconds: float = 0.0) -> Any:
        self.run(d, seconds)
        return self._fire(d)

    def failure(self, d: defer.Deferred[Any], seconds: float = 0.0) -> Any:
        self.run(d, seconds)
        out: list[Any] = []
        d.addBoth(out.append)
        assert out and hasattr(out[0], "raiseException"), f"expected a failure, got {out}"
        return out[0].value


def _server_best(net: Net, txid: bytes) -> int:
    return net._fire(net.server_store.server_channel(txid)).best_value


@pytest.mark.parametrize("delivered", [False, True], ids=["lost-before-the-node", "stored-ack-lost"])
def test_a_drop_resumes_the_same_channel_on_the_next_node(delivered):
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    assert conn.endpoint == "a" and not conn.resumed
    told: list[Resumed] = []
    conn.on_resumed.append(told.append)
    for _ in range(3):
        net.result(conn.pay(1000))
    in_flight = [conn.pay(1000) for _ in range(4)]  # written, not yet read by node a
    net.nodes["a"].kill(delivered)
    for d in in_flight:
        assert isinstance(net.failure(d), ChannelClosed)  # not acknowledged: not counted
    assert conn.dropped
    ack = net.result(conn.pay(1000))
    assert ack.amount == 1000
    assert conn.endpoint == "b" and conn.failovers == 1
    assert told == [Resumed("a", "b", conn.contract_txid)]
    record = conn.record
    assert record.contract_txid == told[0].contract_txid
    # The four lost payments are in the client's c: the server has them, whether node a had
    # stored them or not, and both sides agree.
    paid = VALUE - record.client_change
    assert _server_best(net, conn.contract_txid) == paid
    assert paid == 1000 + 3 * 1000 + 4 * 1000 + 1000  # initial payment, 3 acked, 4 lost, 1 after
    net.result(conn.settle())
    assert net._fire(net.server_store.server_channel(conn.contract_txid)).settlement_tx is not None


def test_payments_asked_for_during_the_resume_leave_in_order():
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    net.nodes["a"].kill()
    order: list[int] = []
    waiting = [conn.pay(100, bytes([i])).addCallback(lambda ack, i=i: order.append(i)) for i in range(6)]
    net.result(defer.gatherResults(waiting))
    assert order == list(range(6))
    assert conn.endpoint == "b"
    assert _server_best(net, conn.contract_txid) == VALUE - conn.record.client_change


def test_the_first_opening_goes_round_robin_past_a_node_that_is_down():
    net = Net()
    net.nodes["a"].up = False
    conn = net.result(net.connect(net.endpoints("a", "b")))
    assert conn.endpoint == "b"
    assert len(net.nodes["a"].attempts) == 1


def test_endpoints_that_are_down_cost_no_channel_key():
    """A new channel's key taken for an endpoint that never connected is the next attempt's key
    (it reached no server): one key for the channel, however many endpoints were down."""
    net = Net()
    taken = []
    real = net.client_wallet.new_channel_key

    def counting():
        return real().addCallback(lambda signer: taken.append(signer.public_key) or signer)

    net.client_wallet.new_channel_key = counting
    for node in net.nodes.values():
        node.up = False
    net.failure(net.connect(net.endpoints("a", "b")), seconds=30)  # 8 attempts, all refused
    net.nodes["b"].up = True
    conn = net.result(net.connect(net.endpoints("a", "b")))
    assert conn.endpoint == "b"
    assert len(taken) == 1 and conn.record.client_key == taken[0]


def test_every_endpoint_down_gives_one_clear_error_after_bounded_rounds():
    net = Net()
    for node in net.nodes.values():
        node.up = False
    started = net.clock.seconds()
    error = net.failure(net.connect(net.endpoints("a", "b"), ), seconds=30)
    assert isinstance(error, AllEndpointsFailed)
    assert str(error).startswith("every server failed (4 rounds of 2 endpoints): a: ")
    assert "; b: " in str(error) and "node down" in str(error)
    # Round robin with a back-off between rounds: 0.5, 1 and 2 s (on the clock, not slept).
    offsets = [round(t - started, 1) for t in net.nodes["a"].attempts]
    assert offsets == [0.0, 0.5, 1.5, 3.5]
    assert len(net.nodes["b"].attempts) == 4


def test_a_resume_waits_for_a_node_to_come_back_within_the_rounds():
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    net.nodes["a"].kill()
    net.nodes["b"].up = False
    d = conn.pay(500)
    net.run(d, seconds=1.0)  # rounds 1 and 2 fail: the client waits
    assert not d.called
    net.nodes["b"].up = True
    assert net.result(d, seconds=3).amount == 500
    assert conn.endpoint == "b"


def test_a_node_that_does_not_know_the_channel_is_refused_and_nothing_is_funded():
    net = Net()
    stranger = net.stranger()
    conn = net.result(net.connect([*net.endpoints("a"), NamedEndpoint(stranger, "stranger")]))
    txid = conn.contract_txid
    net.nodes["a"].kill()
    balance = net._fire(net.client_wallet.balance()) if hasattr(net.client_wallet, "balance") else None
    error = net.failure(conn.pay(100), seconds=30)
    assert isinstance(error, AllEndpointsFailed)
    assert "stranger: the server does not know channel" in str(error)
    assert [r.contract_txid for r in net._fire(net.client_store.client_channels())] == [txid]
    assert net._fire(stranger.factory.manager.list_channels()) == []
    if balance is not None:
        assert net._fire(net.client_wallet.balance()) == balance


def test_stop_ends_a_resume_that_waits_between_rounds():
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    net.nodes["a"].kill()
    net.nodes["b"].up = False
    d = conn.pay(500)
    net.run(d, seconds=0.2)
    assert not d.called
    conn.stop()
    error = net.failure(d)
    assert isinstance(error, ChannelClosed) and "stopped" in str(error)


def test_a_single_endpoint_still_gives_a_plain_connection():
    net = Net()
    settings = ClientSettings(channel_value=VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000)
    conn = net.result(connect(net.clock, net.nodes["a"], net.client_wallet, net.chain, net.client_store, settings,
                              SERVER_ID, manager=net.client_manager))
    assert not isinstance(conn, FailoverConnection)
    net.nodes["a"].kill()
    assert conn.channel.close_reason is CloseReason.CONNECTION_CLOSED



def test_nodes_that_drop_every_payment_do_not_keep_the_client_going_round():
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    for node in net.nodes.values():
        node.drops_payments = True  # each takes the resume, then drops the payment unanswered
    outcomes: list[Any] = []
    for _ in range(10):
        d = conn.pay(100)
        net.run(d, seconds=5)
        d.addErrback(lambda f: outcomes.append(f.value))
        if outcomes and isinstance(outcomes[-1], AllEndpointsFailed):
            break
    error = outcomes[-1]
    assert isinstance(error, AllEndpointsFailed), outcomes
    assert str(error).endswith("dropped the connection before acknowledging a payment, 4 resumes in a row")
    assert conn.failovers == 4
    assert [type(e) for e in outcomes[:-1]] == [ChannelClosed] * 5  # each payment lost, not counted


def _pay_run(net: Net, conn: FailoverConnection, count: int, stopping: Any) -> tuple[defer.Deferred[Any], Any]:
    """``paychan pay``'s payment loop (``cli.window``) over ``conn``, and what it writes."""
    import argparse
    import io

    from twisted_paychan.cli.output import Output
    from twisted_paychan.cli.window import pipelined_payments

    err = io.StringIO()
    args = argparse.Namespace(count=count, amount=100, window=1)
    return defer.ensureDeferred(pipelined_payments(conn, args, None, Output(io.StringIO(), err, False), stopping)), err


def test_paychan_pays_on_through_a_fail_over_and_says_so():
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    d, err = _pay_run(net, conn, 6, lambda: False)
    net.nodes["a"].kill()
    assert net.result(d) == (600, 6)  # six acknowledged, on b
    said = err.getvalue()
    assert "connection to a lost after 0 of 6 payment(s) (the connection closed" in said
    assert f"channel {conn.contract_txid[::-1].hex()} resumed on b\n" in said


def test_ctrl_c_during_a_fail_over_wait_stops_paychan_as_between_two_payments():
    net = Net()
    conn = net.result(net.connect(net.endpoints("a", "b")))
    stop = {"asked": False}
    net.result(conn.pay(100))
    net.nodes["a"].kill()
    net.nodes["b"].up = False
    d, err = _pay_run(net, conn, 6, lambda: stop["asked"])
    net.run(d, seconds=0.25)  # the first round failed: the client waits
    assert not d.called
    stop["asked"] = True
    conn.stop()  # what paychan pay's SIGINT handler asks
    assert net.result(d) == (0, 0)  # no traceback, no error: pay.py then says "stopped by SIGINT"
