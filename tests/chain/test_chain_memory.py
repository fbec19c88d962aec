"""MemoryChain's own helpers and notification plumbing, and the shared mempool rules."""

from __future__ import annotations

from bitcoin.core import CScript, CTransaction, CTxOut
from twisted.internet.task import Clock

from chain_txs import Coin, Key, spend, txid_of
from twisted_paychan.chain.embedded import rules
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.chain.types import ChainTip, SpendEvent, TxState

ALICE = Key.from_seed(b"memory alice")
BOB = Key.from_seed(b"memory bob")


def _chain() -> tuple[MemoryChain, Clock]:
    clock = Clock()
    clock.advance(1_700_000_000)
    return MemoryChain(clock), clock


def test_credit_is_confirmed_and_spendable_at_once() -> None:
    chain, _ = _chain()
    point = chain.credit(ALICE.p2pkh, 50_000)
    status = chain.tx_status(point.txid).result
    assert (status.state, status.block_height, status.confirmations) == (TxState.CONFIRMED, 0, 1)
    raw = spend([Coin(point, 50_000, ALICE)], [(BOB.p2pkh, 49_000)])
    assert chain.broadcast(raw).result == txid_of(raw)
    assert chain.mempool == [txid_of(raw)]
    chain.mine()
    assert chain.mempool == []


def test_block_times_follow_the_clock_but_stay_above_the_median() -> None:
    chain, clock = _chain()
    chain.mine(3)
    assert chain.tip().result.time == 1_700_000_002  # the clock stood still: MTP + 1 each time
    clock.advance(500)
    chain.mine()
    assert chain.tip().result.time == 1_700_000_500


def test_notifications_keep_their_order_and_survive_a_failing_callback() -> None:
    chain, clock = _chain()
    point = chain.credit(ALICE.p2pkh, 50_000)
    seen: list[object] = []

    def explode(tip: ChainTip) -> None:
        raise RuntimeError("a broken watcher")

    chain.watch_blocks(explode)
    chain.watch_blocks(seen.append)
    chain.watch_spend(point, seen.append)
    chain.broadcast(spend([Coin(point, 50_000, ALICE)], [(BOB.p2pkh, 49_000)]))
    chain.mine(2)
    assert seen == []
    clock.advance(0)
    kinds = [(type(e).__name__, e.status.confirmations if isinstance(e, SpendEvent) else e.height) for e in seen]
    assert kinds == [("SpendEvent", 0), ("ChainTip", 1), ("ChainTip", 2), ("SpendEvent", 2)]


def test_core_dust_thresholds() -> None:
    # Bitcoin Core at the default 3 sat/vB dust relay fee: 546 for P2PKH, 294 for P2WPKH.
    assert rules.dust_threshold(CTxOut(0, CScript(ALICE.p2pkh))) == 546
    assert rules.dust_threshold(CTxOut(0, CScript(ALICE.p2wpkh))) == 294
    assert rules.dust_threshold(CTxOut(0, CScript(b"\x6a\x01\x00"))) == 0


def test_median_time_past_and_finality() -> None:
    assert rules.median_time_past([5, 1, 3]) == 3
    assert rules.median_time_past(list(range(100))) == 94  # only the last 11 count
    point = _chain()[0].credit(ALICE.p2pkh, 10_000)
    tx = CTransaction.deserialize(
        spend([Coin(point, 10_000, ALICE)], [(BOB.p2pkh, 9_000)], lock_time=600_000_000, sequence=0xFFFFFFFE)
    )
    assert not rules.is_final(tx, 10, 600_000_000)  # strictly below the clock
    assert rules.is_final(tx, 10, 600_000_001)
    assert rules.is_final(CTransaction(tx.vin, tx.vout, 0), 0, 0)
