"""RpcChain beyond the IChain conformance suite: nodes without -txindex or without
gettxspendingprevout, reorgs, spends made before a watch started, polling on the injected clock,
failures, and RpcFeeEstimator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from chain_txs import ANYONE_CAN_SPEND, Coin, Key, spend, txid_of
from rpc_harness import Harness, serve_methods, start_harness
from twisted_paychan.chain.embedded import miner
from twisted_paychan.chain.embedded.rpc.methods import NodeMethods
from twisted_paychan.chain.embedded.rpc.server import serve_node
from twisted_paychan.chain.fees import NoFeeEstimate, UnknownTarget
from twisted_paychan.chain.interfaces import IFeeEstimator
from twisted_paychan.chain.rpc import rejects
from twisted_paychan.chain.rpc.chain import RpcChain, RpcFeeEstimator
from twisted_paychan.chain.types import BroadcastRejected, ChainTip, OutPoint, RejectKind, SpendEvent, TxState
from twisted_paychan.rpc.connection import RpcConnectionError
from twisted_paychan.rpc.errors import RpcError

ALICE = Key.from_seed(b"rpc client alice")
BOB = Key.from_seed(b"rpc client bob")


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = await start_harness(tmp_path, fee_rate=2500)
    try:
        yield made
    finally:
        await made.close()


def funded(harness: Harness, value: int = 100_000) -> Coin:
    return Coin(harness.inner.fund(ALICE.p2pkh, value), value, ALICE)


def pay_bob(coin: Coin) -> bytes:
    return spend([coin], [(BOB.p2pkh, coin.value - 1_000)])


class NoTxIndex(NodeMethods):
    """Bitcoin Core without -txindex: confirmed transactions only with their block hash."""

    def dispatch(self, method: str, params: Any) -> Any:
        if method == "getrawtransaction" and isinstance(params, list) and len(params) < 3:
            txid = bytes.fromhex(params[0])[::-1]
            if self.node.tx_status(txid).state is not TxState.MEMPOOL:
                raise RpcError(
                    -5,
                    "No such mempool transaction. Use -txindex or provide a block hash to enable blockchain "
                    "transaction queries. Use gettransaction for wallet transactions.",
                )
        return super().dispatch(method, params)


class OldCore(NodeMethods):
    """Bitcoin Core before 24 (no gettxspendingprevout) and before 25 (no time in
    getblockchaininfo)."""

    def dispatch(self, method: str, params: Any) -> Any:
        if method == "gettxspendingprevout":
            raise RpcError(-32601, "Method not found")
        result = super().dispatch(method, params)
        if method == "getblockchaininfo":
            del result["time"]
        return result


async def chain_on(methods: NodeMethods) -> tuple[Any, RpcChain]:
    port, url = await serve_methods(methods)
    chain = RpcChain.from_url(reactor, url, clock=Clock())
    await chain.start()
    return port, chain


@pytest_twisted.ensureDeferred
async def test_tx_status_without_txindex_uses_the_block_it_saw(harness: Harness) -> None:
    port, chain = await chain_on(NoTxIndex(harness.node))
    try:
        coin = funded(harness)
        raw = pay_bob(coin)
        txid = await chain.broadcast(raw)
        assert (await chain.tx_status(txid)).state is TxState.MEMPOOL
        [block_hash] = harness.inner.mine(1)
        assert (await chain.tx_status(txid)).state is TxState.UNKNOWN  # not followed yet
        await chain.poll()  # sees the block, remembers where the pending transaction went
        status = await chain.tx_status(txid)
        assert (status.state, status.confirmations, status.block_hash) == (TxState.CONFIRMED, 1, block_hash)
        assert await chain.get_transaction(txid) == raw
        # A transaction it never saw: unknown without a hint, found with one.
        funding = coin.outpoint.txid
        assert (await chain.tx_status(funding)).state is TxState.UNKNOWN
        block = harness.node.tx_status(funding).block_hash
        hinted = await chain.tx_status(funding, block_hint=block)
        assert (hinted.state, hinted.confirmations) == (TxState.CONFIRMED, 2)
        # Broadcasting a confirmed transaction again is still a success (-27 from the node).
        assert await chain.broadcast(raw) == txid
    finally:
        await chain.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_old_core_watches_through_a_mempool_copy(harness: Harness) -> None:
    port, chain = await chain_on(OldCore(harness.node))
    try:
        tip = await chain.tip()
        assert tip == harness.node.tip()  # from getblockheader, as getblockchaininfo has no time
        coin = funded(harness)
        events: list[SpendEvent] = []
        chain.watch_spend(coin.outpoint, events.append)
        await chain.poll()
        raw = pay_bob(coin)
        await chain.broadcast(raw)
        await chain.poll()
        assert [(e.spending_txid, e.status.state) for e in events] == [(txid_of(raw), TxState.MEMPOOL)]
        harness.inner.mine(1)
        await chain.poll()
        assert events[-1].status.state is TxState.CONFIRMED
    finally:
        await chain.stop()
        await port.stopListening()


def _fork(harness: Harness, below: int, count: int, txs: tuple[bytes, ...] = (), fees: int = 0) -> list[bytes]:
    """Mine ``count`` blocks on top of height ``below`` (not the tip), the first with ``txs``."""
    node = harness.node
    prev = node.block_hash_at(below)
    hashes = []
    for i in range(count):
        block = miner.build_block(
            prev, below + 1 + i, node.next_block_time() + i, b"\x51", list(txs) if i == 0 else [], fees if i == 0 else 0, tag=b"fork"
        )
        node.submit_block(block.raw)
        prev = block.block_hash
        hashes.append(block.block_hash)
    assert node.tip().block_hash == hashes[-1]
    return hashes


@pytest_twisted.ensureDeferred
async def test_reorg_takes_a_spend_back_to_the_mempool(harness: Harness) -> None:
    chain = harness.chain
    coin = funded(harness)
    events: list[SpendEvent] = []
    tips: list[ChainTip] = []
    chain.watch_spend(coin.outpoint, events.append)
    chain.watch_blocks(tips.append)
    await chain.poll()
    raw = pay_bob(coin)
    await chain.broadcast(raw)
    [confirmed_in] = harness.inner.mine(1)
    await chain.poll()
    assert events[-1].status.block_hash == confirmed_in
    base = harness.node.height - 1
    fork = _fork(harness, base, 2)  # a heavier branch without the spend
    await chain.poll()
    assert [t.block_hash for t in tips[-2:]] == fork
    assert events[-1].status.state is TxState.MEMPOOL  # the node put it back in its mempool
    harness.inner.mine(1)
    await chain.poll()
    assert (events[-1].status.state, events[-1].status.confirmations) == (TxState.CONFIRMED, 1)
    assert events[-1].status.block_height == base + 3


@pytest_twisted.ensureDeferred
async def test_reorg_removing_a_spend_for_good_says_unknown(harness: Harness) -> None:
    chain = harness.chain
    coin = funded(harness)
    funding_block_height = harness.node.height
    raw = pay_bob(coin)
    await chain.broadcast(raw)
    harness.inner.mine(1)
    events: list[SpendEvent] = []
    chain.watch_spend(coin.outpoint, events.append)
    await chain.poll()
    assert events[-1].status.state is TxState.CONFIRMED
    # A heavier branch from below the funding block, where the coinbase coin that funded the
    # coin is spent otherwise: the coin, and so its spend, never exist there.
    funding = CTransaction.deserialize(harness.node.raw_transaction(coin.outpoint.txid))
    source = OutPoint(bytes(funding.vin[0].prevout.hash), funding.vin[0].prevout.n)
    source_value = CTransaction.deserialize(harness.node.raw_transaction(source.txid)).vout[source.index].nValue
    double_spend = spend([Coin(source, source_value, None)], [(ANYONE_CAN_SPEND, source_value - 1_000)])
    _fork(harness, funding_block_height - 1, 3, (double_spend,), 1_000)
    assert harness.node.tx_status(txid_of(raw)).state is TxState.UNKNOWN
    await chain.poll()
    assert events[-1].status.state is TxState.UNKNOWN
    assert events[-1].spending_txid == txid_of(raw)


@pytest_twisted.ensureDeferred
async def test_a_spend_made_blocks_before_the_watch_is_found(harness: Harness) -> None:
    chain = harness.chain
    coin = funded(harness)
    raw = pay_bob(coin)
    await chain.broadcast(raw)
    harness.inner.mine(6)
    events: list[SpendEvent] = []
    chain.watch_spend(coin.outpoint, events.append)
    await chain.poll()
    [event] = events
    assert (event.spending_txid, event.status.state, event.status.confirmations) == (txid_of(raw), TxState.CONFIRMED, 6)


@pytest_twisted.ensureDeferred
async def test_a_watch_on_an_output_that_does_not_exist_yet(harness: Harness) -> None:
    chain = harness.chain
    coin = funded(harness)
    parent = pay_bob(coin)
    point = OutPoint(txid_of(parent), 0)
    events: list[SpendEvent] = []
    chain.watch_spend(point, events.append)
    await chain.poll()
    assert events == []
    await chain.broadcast(parent)
    child = spend([Coin(point, coin.value - 1_000, BOB)], [(ALICE.p2pkh, coin.value - 2_000)])
    await chain.broadcast(child)
    await chain.poll()
    assert [(e.spending_txid, e.status.state) for e in events] == [(txid_of(child), TxState.MEMPOOL)]


@pytest_twisted.ensureDeferred
async def test_polls_run_on_the_injected_clock(harness: Harness) -> None:
    chain, clock = harness.chain, harness.poll_clock
    heard: Deferred[ChainTip] = Deferred()
    chain.watch_blocks(lambda tip: heard.called or heard.callback(tip))
    [block_hash] = harness.inner.mine(1)
    clock.advance(chain.poll_interval)  # the LoopingCall polls; the answer comes over HTTP
    tip = await heard.addTimeout(10, reactor)
    assert tip.block_hash == block_hash


@pytest_twisted.ensureDeferred
async def test_a_new_spend_watch_looks_at_once_not_at_the_next_tick(harness: Harness) -> None:
    chain, clock = harness.chain, harness.poll_clock
    coin = funded(harness)
    raw = pay_bob(coin)
    await chain.broadcast(raw)
    heard: Deferred[SpendEvent] = Deferred()
    chain.watch_spend(coin.outpoint, heard.callback)
    chain.watch_spend(coin.outpoint, lambda event: None)  # a burst of watches: one extra poll
    assert clock.getDelayedCalls() and min(c.getTime() for c in clock.getDelayedCalls()) == clock.seconds()
    clock.advance(0)
    event = await heard.addTimeout(10, reactor)
    assert (event.spending_txid, event.status.state) == (txid_of(raw), TxState.MEMPOOL)


@pytest_twisted.ensureDeferred
async def test_broadcast_rejections_carry_core_reason_and_code(harness: Harness) -> None:
    chain = harness.chain
    with pytest.raises(BroadcastRejected) as caught:
        await chain.broadcast(b"\x00\x01")
    assert caught.value.code == -22
    coin = funded(harness)
    await chain.broadcast(pay_bob(coin))
    with pytest.raises(BroadcastRejected) as caught:
        await chain.broadcast(spend([coin], [(ALICE.p2pkh, coin.value - 500)]))  # pays less than it replaces
    assert caught.value.code == -26 and caught.value.reason.startswith("insufficient fee, rejecting replacement ")
    assert caught.value.kind is RejectKind.FEE_TOO_LOW


@pytest.mark.parametrize(
    "code, message, kind",
    [
        (-26, "min relay fee not met, 100 < 141", RejectKind.FEE_TOO_LOW),
        (-26, "mempool min fee not met, 100 < 2000", RejectKind.FEE_TOO_LOW),
        (-26, "insufficient fee, rejecting replacement abc; new feerate 0.0001 <= old feerate 0.0002",
         RejectKind.FEE_TOO_LOW),
        (-25, "bad-txns-inputs-missingorspent", RejectKind.INPUTS_SPENT),
        (-25, "Inputs missing or spent", RejectKind.INPUTS_SPENT),
        (-26, "txn-mempool-conflict", RejectKind.CONFLICT),
        (-26, "non-final", RejectKind.NON_FINAL),
        (-26, "non-BIP68-final", RejectKind.NON_FINAL),
        (-26, "txn-already-known", RejectKind.ALREADY_KNOWN),
        (-27, "Transaction outputs already in utxo set", RejectKind.ALREADY_KNOWN),
        (-26, "mandatory-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG operation)",
         RejectKind.INVALID),
        (-25, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)", RejectKind.INVALID),
        (-22, "TX decode failed. Make sure the tx has at least one input.", RejectKind.INVALID),
        (-28, "Loading block index...", RejectKind.UNREACHABLE),
    ],
)
def test_core_refusals_are_classified_by_code_and_reason(code: int, message: str, kind: RejectKind) -> None:
    rejected = rejects.refused(RpcError(code, message))
    assert (rejected.reason, rejected.code, rejected.kind) == (message, code, kind)


@pytest_twisted.ensureDeferred
async def test_a_broadcast_to_an_unreachable_node_is_not_the_transactions_fault(harness: Harness) -> None:
    raw = pay_bob(funded(harness))
    port_number = harness.server.port_number
    await harness.server.stop()
    with pytest.raises(BroadcastRejected) as caught:
        await harness.chain.broadcast(raw)
    assert caught.value.kind is RejectKind.UNREACHABLE
    assert caught.value.code == rejects.NO_ANSWER
    assert caught.value.reason.startswith(f"cannot reach http://127.0.0.1:{port_number}")
    assert isinstance(caught.value.__cause__, RpcConnectionError)


@pytest_twisted.ensureDeferred
async def test_a_broadcast_with_wrong_credentials_is_not_the_transactions_fault(harness: Harness) -> None:
    url = harness.server.url.replace("http://", "http://nobody:wrong@")
    chain = RpcChain.from_url(reactor, url, clock=Clock())
    try:
        with pytest.raises(BroadcastRejected) as caught:
            await chain.broadcast(pay_bob(funded(harness)))
    finally:
        await chain.stop()
    assert (caught.value.kind, caught.value.code) == (RejectKind.UNREACHABLE, rejects.NO_ANSWER)
    assert "refused our RPC credentials (HTTP 401)" in caught.value.reason


@pytest_twisted.ensureDeferred
async def test_an_unreachable_node_fails_polls_without_stopping_them(harness: Harness, tmp_path: Path) -> None:
    chain, clock = harness.chain, harness.poll_clock
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        port_number = harness.server.port_number
        await harness.server.stop()
        with pytest.raises(RpcConnectionError, match=f"cannot reach http://127.0.0.1:{port_number}"):
            await chain.poll()
        for _ in range(2):
            clock.advance(chain.poll_interval)  # the loop's poll fails too: logged, not raised
            with pytest.raises(RpcConnectionError):
                await chain.poll()  # runs after the loop's poll
        harness.server = await serve_node(reactor, harness.node, f"tcp:{port_number}:interface=127.0.0.1", cookie_dir=tmp_path)
        harness.inner.mine(1)
        await chain.poll()  # after the loop's
        assert chain.polling
        assert chain.follower.tip is not None and chain.follower.tip.height == harness.node.height
    finally:
        globalLogPublisher.removeObserver(logged.append)
    failures = [e for e in logged if "will keep trying" in e.get("log_format", "")]
    assert len(failures) == 1  # once per run of failures, not once per poll


@pytest_twisted.ensureDeferred
async def test_chain_name(harness: Harness) -> None:
    assert await harness.chain.chain_name() == "regtest"


@pytest_twisted.ensureDeferred
async def test_fee_estimator(harness: Harness) -> None:
    estimator = RpcFeeEstimator(harness.connection)
    assert verifyObject(IFeeEstimator, estimator)
    assert await estimator.fee_rate("normal") == 2500
    assert await RpcFeeEstimator(harness.connection, floor=5000).fee_rate("fast") == 5000
    with pytest.raises(UnknownTarget):
        estimator.fee_rate("soon")
    port, url = await serve_methods(NodeMethods(harness.node))  # no configured rate
    try:
        chain = RpcChain.from_url(reactor, url, clock=Clock())
        with pytest.raises(NoFeeEstimate):
            await RpcFeeEstimator(chain.connection).fee_rate("economy")
        assert await RpcFeeEstimator(chain.connection, fallback=3000).fee_rate("economy") == 3000
        assert await RpcFeeEstimator(chain.connection, fallback=10).fee_rate("economy") == 1000
        await chain.stop()
    finally:
        await port.stopListening()
