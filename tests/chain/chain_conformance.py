"""
The IChain conformance suite: what every chain backend must do, whatever it runs on.

The tests take a ``backend`` fixture (see ``chain_backends.Backend``) and are collected by
``test_chain_conformance.py``, which parametrises that fixture over every backend. They only
use IChain plus the backend's test powers, and heights relative to the tip, so a backend that
mines or funds differently (a Bitcoin Core over JSON-RPC) runs them unchanged. They are async so
that a backend whose answers really arrive later needs no change either.
"""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from chain_backends import Backend
from chain_txs import Coin, Key, spend, txid_of
from twisted_paychan.chain.feed import (
    BlockConnected,
    BlockDisconnected,
    ChainEvent,
    FeedGap,
    FeedTx,
    MempoolAdded,
)
from twisted_paychan.chain.interfaces import IChain, ITransactionWatch
from twisted_paychan.chain.types import (
    BlockId,
    BroadcastRejected,
    ChainTip,
    OutPoint,
    RejectKind,
    SpendEvent,
    TxState,
)

ALICE = Key.from_seed(b"conformance alice")
BOB = Key.from_seed(b"conformance bob")
FEE = 1_000


def _funded(backend: Backend, value: int = 100_000, segwit: bool = False) -> Coin:
    script = ALICE.p2wpkh if segwit else ALICE.p2pkh
    return Coin(backend.fund(script, value), value, ALICE, segwit)


def _pay_bob(coin: Coin, lock_time: int = 0, sequence: int = 0xFFFFFFFF) -> bytes:
    return spend([coin], [(BOB.p2pkh, coin.value - FEE)], lock_time=lock_time, sequence=sequence)


async def _rejection(backend: Backend, raw: bytes) -> BroadcastRejected:
    try:
        await backend.chain.broadcast(raw)
    except BroadcastRejected as e:
        return e
    raise AssertionError("the transaction was accepted")


def test_provides_ichain(backend: Backend) -> None:
    assert verifyObject(IChain, backend.chain)


@pytest_twisted.ensureDeferred
async def test_broadcast_accepts_and_returns_the_txid(backend: Backend) -> None:
    for segwit in (False, True):
        raw = _pay_bob(_funded(backend, segwit=segwit))
        assert await backend.chain.broadcast(raw) == txid_of(raw)


@pytest_twisted.ensureDeferred
async def test_broadcast_of_a_known_transaction_succeeds(backend: Backend) -> None:
    raw = _pay_bob(_funded(backend))
    await backend.chain.broadcast(raw)
    assert await backend.chain.broadcast(raw) == txid_of(raw)
    backend.mine(1)
    assert await backend.chain.broadcast(raw) == txid_of(raw)


@pytest_twisted.ensureDeferred
async def test_tx_status_goes_unknown_mempool_confirmed(backend: Backend) -> None:
    raw = _pay_bob(_funded(backend))
    txid = txid_of(raw)
    assert (await backend.chain.tx_status(txid)).state is TxState.UNKNOWN
    await backend.chain.broadcast(raw)
    status = await backend.chain.tx_status(txid)
    assert (status.state, status.confirmations, status.block_height) == (TxState.MEMPOOL, 0, None)
    [block_hash] = backend.mine(1)
    tip = await backend.chain.tip()
    status = await backend.chain.tx_status(txid)
    assert (status.state, status.confirmations) == (TxState.CONFIRMED, 1)
    assert (status.block_height, status.block_hash) == (tip.height, block_hash)
    backend.mine(2)
    assert (await backend.chain.tx_status(txid)).confirmations == 3


@pytest_twisted.ensureDeferred
async def test_get_transaction_from_mempool_and_blocks(backend: Backend) -> None:
    raw = _pay_bob(_funded(backend))
    assert await backend.chain.get_transaction(txid_of(raw)) is None
    await backend.chain.broadcast(raw)
    assert await backend.chain.get_transaction(txid_of(raw)) == raw
    backend.mine(1)
    assert await backend.chain.get_transaction(txid_of(raw)) == raw


@pytest_twisted.ensureDeferred
async def test_tip_follows_mined_blocks(backend: Backend) -> None:
    before = await backend.chain.tip()
    hashes = backend.mine(3)
    tip = await backend.chain.tip()
    assert tip.height == before.height + 3
    assert tip.block_hash == hashes[-1]
    assert tip.median_time_past <= tip.time


@pytest_twisted.ensureDeferred
async def test_median_time_past_follows_the_clock(backend: Backend) -> None:
    backend.mine(11)
    start = await backend.chain.tip()
    backend.advance(10_000)
    backend.mine(1)
    jumped = (await backend.chain.tip()).time
    assert jumped >= start.time + 5_000
    backend.mine(4)
    tip = await backend.chain.tip()
    assert tip.time >= jumped
    assert tip.median_time_past < jumped  # 6 of the last 11 blocks are older
    backend.mine(1)
    assert (await backend.chain.tip()).median_time_past >= jumped


@pytest_twisted.ensureDeferred
async def test_unspent_outputs_for_a_script(backend: Backend) -> None:
    coin = _funded(backend)
    found = await backend.chain.unspent_outputs(ALICE.p2pkh)
    assert [(u.outpoint, u.value, u.script_pubkey) for u in found] == [(coin.outpoint, coin.value, ALICE.p2pkh)]
    assert found[0].height is not None
    raw = _pay_bob(coin)
    await backend.chain.broadcast(raw)
    assert await backend.chain.unspent_outputs(ALICE.p2pkh) == []
    [pending] = await backend.chain.unspent_outputs(BOB.p2pkh)
    assert (pending.outpoint, pending.value, pending.height) == (OutPoint(txid_of(raw), 0), coin.value - FEE, None)
    backend.mine(1)
    [confirmed] = await backend.chain.unspent_outputs(BOB.p2pkh)
    assert confirmed.height == (await backend.chain.tip()).height


@pytest_twisted.ensureDeferred
async def test_watch_spend_hears_mempool_then_block(backend: Backend) -> None:
    coin = _funded(backend)
    events: list[SpendEvent] = []
    backend.chain.watch_spend(coin.outpoint, events.append)
    await backend.settle()
    assert events == []
    raw = _pay_bob(coin)
    await backend.chain.broadcast(raw)
    assert events == []  # never from inside broadcast
    await backend.settle()
    assert [(e.outpoint, e.spending_txid, e.spending_tx, e.status.state) for e in events] == [
        (coin.outpoint, txid_of(raw), raw, TxState.MEMPOOL)
    ]
    backend.mine(1)
    await backend.settle()
    assert events[-1].status.state is TxState.CONFIRMED
    assert events[-1].status.confirmations == 1
    assert events[-1].spending_tx == raw


@pytest_twisted.ensureDeferred
async def test_watch_spend_of_an_already_spent_outpoint(backend: Backend) -> None:
    coin = _funded(backend)
    raw = _pay_bob(coin)
    await backend.chain.broadcast(raw)
    backend.mine(1)
    events: list[SpendEvent] = []
    backend.chain.watch_spend(coin.outpoint, events.append)
    assert events == []  # not re-entrantly from watch_spend
    await backend.settle()
    assert [(e.spending_txid, e.status.state, e.status.confirmations) for e in events] == [
        (txid_of(raw), TxState.CONFIRMED, 1)
    ]


@pytest_twisted.ensureDeferred
async def test_watch_spend_cancelled_hears_nothing(backend: Backend) -> None:
    coin = _funded(backend)
    events: list[SpendEvent] = []
    watch = backend.chain.watch_spend(coin.outpoint, events.append)
    await backend.chain.broadcast(_pay_bob(coin))
    watch.cancel()
    watch.cancel()
    await backend.settle()
    backend.mine(1)
    await backend.settle()
    assert events == []


@pytest_twisted.ensureDeferred
async def test_watch_blocks_fires_per_block(backend: Backend) -> None:
    start = await backend.chain.tip()
    tips: list[ChainTip] = []
    watch = backend.chain.watch_blocks(tips.append)
    hashes = backend.mine(3)
    assert tips == []
    await backend.settle()
    assert [(t.height, t.block_hash) for t in tips] == [(start.height + i + 1, h) for i, h in enumerate(hashes)]
    assert tips[-1] == await backend.chain.tip()
    watch.cancel()
    backend.mine(1)
    await backend.settle()
    assert len(tips) == 3


@pytest_twisted.ensureDeferred
async def test_rejects_a_bad_signature(backend: Backend) -> None:
    rejected = await _rejection(backend, spend([_funded(backend)], [(BOB.p2pkh, 99_000)], corrupt=True))
    assert "script-verify-flag" in rejected.reason
    assert (rejected.code, rejected.kind) == (-26, RejectKind.INVALID)


@pytest_twisted.ensureDeferred
async def test_rejects_a_fee_below_the_relay_minimum_as_fee_too_low(backend: Backend) -> None:
    coin = _funded(backend)
    rejected = await _rejection(backend, spend([coin], [(BOB.p2pkh, coin.value - 10)]))
    assert rejected.reason.startswith("min relay fee not met")
    assert (rejected.code, rejected.kind) == (-26, RejectKind.FEE_TOO_LOW)


@pytest_twisted.ensureDeferred
async def test_rejects_an_undecodable_transaction_as_invalid(backend: Backend) -> None:
    rejected = await _rejection(backend, b"\x02\x00\x00")
    assert (rejected.code, rejected.kind) == (-22, RejectKind.INVALID)


@pytest_twisted.ensureDeferred
async def test_rejects_a_dust_output_as_invalid(backend: Backend) -> None:
    coin = _funded(backend)
    rejected = await _rejection(backend, spend([coin], [(BOB.p2pkh, 100), (ALICE.p2pkh, coin.value - 2 * FEE)]))
    assert (rejected.reason, rejected.code, rejected.kind) == ("dust", -26, RejectKind.INVALID)


@pytest_twisted.ensureDeferred
async def test_rejects_a_missing_input(backend: Backend) -> None:
    ghost = Coin(OutPoint(b"\x42" * 32, 0), 100_000, ALICE)
    rejected = await _rejection(backend, _pay_bob(ghost))
    assert (rejected.reason, rejected.code) == ("bad-txns-inputs-missingorspent", -25)
    assert rejected.kind is RejectKind.INPUTS_SPENT


@pytest_twisted.ensureDeferred
async def test_rejects_a_double_spend_against_the_mempool(backend: Backend) -> None:
    coin = _funded(backend)
    await backend.chain.broadcast(_pay_bob(coin))
    other = spend([coin], [(ALICE.p2pkh, coin.value - FEE // 2)])  # pays less: no replacement
    rejected = await _rejection(backend, other)
    if backend.name == "memory":  # the memory chain replaces nothing
        assert (rejected.reason, rejected.code, rejected.kind) == ("txn-mempool-conflict", -26, RejectKind.CONFLICT)
    else:  # Core 31's full RBF
        assert rejected.reason.startswith("insufficient fee, rejecting replacement ")
        assert rejected.reason.endswith(", less fees than conflicting txs; 0.000005 < 0.00001")
        assert (rejected.code, rejected.kind) == (-26, RejectKind.FEE_TOO_LOW)


@pytest_twisted.ensureDeferred
async def test_rejects_a_spend_of_a_spent_output(backend: Backend) -> None:
    coin = _funded(backend)
    await backend.chain.broadcast(_pay_bob(coin))
    backend.mine(1)
    rejected = await _rejection(backend, spend([coin], [(ALICE.p2pkh, coin.value - 2 * FEE)]))
    assert (rejected.reason, rejected.code) == ("bad-txns-inputs-missingorspent", -25)
    assert rejected.kind is RejectKind.INPUTS_SPENT


@pytest_twisted.ensureDeferred
async def test_non_final_by_height_until_the_lock_height(backend: Backend) -> None:
    coin = _funded(backend)
    tip = await backend.chain.tip()
    raw = _pay_bob(coin, lock_time=tip.height + 2, sequence=0xFFFFFFFE)
    rejected = await _rejection(backend, raw)
    assert (rejected.reason, rejected.code, rejected.kind) == ("non-final", -26, RejectKind.NON_FINAL)
    backend.mine(1)
    assert (await _rejection(backend, raw)).kind is RejectKind.NON_FINAL
    backend.mine(1)  # the next block is tip + 3, above the lock height
    assert await backend.chain.broadcast(raw) == txid_of(raw)


@pytest_twisted.ensureDeferred
async def test_final_sequence_disables_the_lock_time(backend: Backend) -> None:
    raw = _pay_bob(_funded(backend), lock_time=(await backend.chain.tip()).height + 50, sequence=0xFFFFFFFF)
    assert await backend.chain.broadcast(raw) == txid_of(raw)


# -- the transaction feed (issue #21) ---------------------------------------------------------


def _shape(events: list[ChainEvent]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, BlockConnected):
            out.append(("connected", e.height, e.block_hash))
        elif isinstance(e, BlockDisconnected):
            out.append(("disconnected", e.height, e.block_hash))
        elif isinstance(e, MempoolAdded):
            out.append(("added", *sorted(t.txid for t in e.txs)))
        elif isinstance(e, FeedGap):
            out.append(("gap", e.tip.height, e.tip.block_hash))
        else:
            out.append(("removed", *sorted(e.txids)))
    return out


@pytest_twisted.ensureDeferred
async def test_scan_outputs_finds_confirmed_coins_of_many_scripts(backend: Backend) -> None:
    alice, bob = _funded(backend), Coin(backend.fund(BOB.p2wpkh, 70_000), 70_000, BOB, True)
    await backend.chain.broadcast(_pay_bob(alice))  # a mempool spend: the scan ignores it
    scan = await backend.chain.scan_outputs([ALICE.p2pkh, BOB.p2wpkh, BOB.p2pkh])
    tip = await backend.chain.tip()
    assert scan.tip == BlockId(tip.height, tip.block_hash)
    assert sorted((u.outpoint, u.value, u.script_pubkey) for u in scan.utxos) == sorted(
        [(alice.outpoint, alice.value, ALICE.p2pkh), (bob.outpoint, bob.value, BOB.p2wpkh)]
    )
    assert all(u.height is not None for u in scan.utxos)


@pytest_twisted.ensureDeferred
async def test_transaction_feed_hears_the_mempool_then_the_block(backend: Backend) -> None:
    coin = _funded(backend)
    start = await backend.chain.tip()
    events: list[ChainEvent] = []
    watch = backend.chain.watch_transactions(events.append)
    assert ITransactionWatch.providedBy(watch)
    await watch.sync()
    assert events == []
    raw = _pay_bob(coin)
    await backend.chain.broadcast(raw)
    assert events == []  # never from inside broadcast
    await watch.sync()
    [added] = events
    assert isinstance(added, MempoolAdded)
    assert list(added.txs) == [FeedTx(txid_of(raw), (coin.outpoint,), ((coin.value - FEE, BOB.p2pkh),))]
    events.clear()
    [block_hash] = backend.mine(1)
    await watch.sync()
    [connected] = events
    assert isinstance(connected, BlockConnected)
    assert (connected.height, connected.block_hash) == (start.height + 1, block_hash)
    assert txid_of(raw) in [t.txid for t in connected.txs]
    watch.cancel()
    backend.mine(1)
    await backend.settle()
    assert len(events) == 1


@pytest_twisted.ensureDeferred
async def test_transaction_feed_through_a_reorg(backend: Backend) -> None:
    assert backend.reorg is not None
    coin = _funded(backend)
    raw = _pay_bob(coin)
    await backend.chain.broadcast(raw)
    start = await backend.chain.tip()
    events: list[ChainEvent] = []
    watch = backend.chain.watch_transactions(events.append)
    await watch.sync()
    assert _shape(events) == [("added", txid_of(raw))]  # the mempool, when a watch starts
    [mined] = backend.mine(1)
    await watch.sync()
    events.clear()
    fork = backend.reorg(1)
    await watch.sync()
    assert _shape(events) == [
        ("disconnected", start.height + 1, mined),
        ("connected", start.height + 1, fork[0]),
        ("connected", start.height + 2, fork[1]),
        ("added", txid_of(raw)),  # back in the mempool
    ]
    assert all(txid_of(raw) not in [t.txid for t in e.txs] for e in events if isinstance(e, BlockConnected))


@pytest_twisted.ensureDeferred
async def test_transaction_feed_catches_up_from_since(backend: Backend) -> None:
    assert backend.reorg is not None
    start = await backend.chain.tip()
    here = BlockId(start.height, start.block_hash)
    first, second = backend.mine(2)
    events: list[ChainEvent] = []
    watch = backend.chain.watch_transactions(events.append, [here])
    assert events == []
    await watch.sync()
    assert _shape(events) == [("connected", start.height + 1, first), ("connected", start.height + 2, second)]
    watch.cancel()

    # Where it was left the chain while nobody watched: led back down, then up the new chain.
    fork = backend.reorg(1)
    events.clear()
    since = [BlockId(start.height + 2, second), BlockId(start.height + 1, first), here]
    watch = backend.chain.watch_transactions(events.append, since)
    await watch.sync()
    assert _shape(events) == [
        ("disconnected", start.height + 2, second),
        ("connected", start.height + 2, fork[0]),
        ("connected", start.height + 3, fork[1]),
    ]
    watch.cancel()

    # On no block of this chain at all: the listener must scan again.
    events.clear()
    watch = backend.chain.watch_transactions(events.append, [BlockId(start.height, b"\x99" * 32)])
    await watch.sync()
    tip = await backend.chain.tip()
    assert _shape(events) == [("gap", tip.height, tip.block_hash)]
    watch.cancel()
