"""Core 31's full replace-by-fee on the embedded node: no signal needed; a conflict that pays
for what it evicts replaces it and its descendants; too cheap, too many or circular ones are
refused with Core's reasons; the feerate diagram decides between fee and size."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from chain_backends import Backend, embedded_backend
from chain_txs import Coin, Key, spend, txid_of
from twisted_paychan.chain.embedded.chain import EmbeddedChain
from twisted_paychan.chain.embedded.node import RegtestNode
from twisted_paychan.chain.embedded.replacement import MAX_REPLACEMENT_CANDIDATES, format_money, improves_diagram
from twisted_paychan.chain.types import BroadcastRejected, OutPoint, RejectKind, TxState, display_hex

ALICE = Key.from_seed(b"rbf alice")
BOB = Key.from_seed(b"rbf bob")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    made = embedded_backend(tmp_path)
    yield made
    made.close()


def _node(backend: Backend) -> RegtestNode:
    assert isinstance(backend.chain, EmbeddedChain)
    return backend.chain.node


def _coin(backend: Backend, value: int = 100_000) -> Coin:
    return Coin(backend.fund(ALICE.p2pkh, value), value, ALICE)


def _refusal(node: RegtestNode, raw: bytes) -> BroadcastRejected:
    with pytest.raises(BroadcastRejected) as info:
        node.accept(raw)
    return info.value


def test_a_conflict_paying_more_replaces_without_any_signal(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend)
    first = spend([coin], [(BOB.p2pkh, 99_000)])  # final sequence: no BIP125 signal
    node.accept(first)
    child = spend([Coin(OutPoint(txid_of(first), 0), 99_000, BOB)], [(ALICE.p2pkh, 98_000)])
    node.accept(child)
    better = spend([coin], [(ALICE.p2pkh, 97_000)])  # 3,000 > 1,000 + 1,000 of its child
    node.accept(better)
    assert [e.txid for e in node.mempool_entries()] == [txid_of(better)]
    assert node.tx_status(txid_of(first)).state is TxState.UNKNOWN
    backend.mine(1)
    assert node.tx_status(txid_of(better)).state is TxState.CONFIRMED


def test_a_replacement_must_pay_for_what_it_evicts_and_for_its_relay(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend)
    node.accept(spend([coin], [(BOB.p2pkh, 99_000)]))
    same = spend([coin], [(ALICE.p2pkh, 99_000)])  # same fee: no additional fee for its relay
    refused = _refusal(node, same)
    assert refused.reason.startswith(f"insufficient fee, rejecting replacement {display_hex(txid_of(same))}, "
                                     "not enough additional fees to relay; 0.00 < 0.0000")
    assert (refused.code, refused.kind) == (-26, RejectKind.FEE_TOO_LOW)


def test_a_replacement_may_not_spend_what_it_evicts(backend: Backend) -> None:
    node = _node(backend)
    a, b = _coin(backend), _coin(backend)
    first = spend([a], [(BOB.p2pkh, 99_000)])
    node.accept(first)
    circular = spend([a, Coin(OutPoint(txid_of(first), 0), 99_000, BOB)], [(ALICE.p2pkh, 150_000)])
    refused = _refusal(node, circular)
    assert refused.reason == (f"bad-txns-spends-conflicting-tx, {display_hex(txid_of(circular))} spends "
                              f"conflicting transaction {display_hex(txid_of(first))}")
    del b


def test_at_most_100_evicted(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend, 20_000_000)
    parent = spend([coin], [(BOB.p2pkh, 100_000)] * 101 + [(ALICE.p2pkh, 20_000_000 - 101 * 100_000 - 50_000)])
    # The parent is confirmed; 101 mempool children of it all conflict with one spender of all.
    node.accept(parent)
    backend.mine(1)
    coins = [Coin(OutPoint(txid_of(parent), i), 100_000, BOB) for i in range(101)]
    for c in coins:
        node.accept(spend([c], [(ALICE.p2pkh, 99_000)]))
    greedy = spend(coins, [(ALICE.p2pkh, 101 * 100_000 - 400_000)])
    refused = _refusal(node, greedy)
    assert refused.reason == (f"too many potential replacements, rejecting replacement {display_hex(txid_of(greedy))}; "
                              f"too many potential replacements (101 > {MAX_REPLACEMENT_CANDIDATES})")
    assert refused.kind is RejectKind.CONFLICT
    fewer = spend(coins[:100], [(ALICE.p2pkh, 100 * 100_000 - 400_000)])
    node.accept(fewer)  # 100 is allowed
    assert len(node.mempool_entries()) == 2


def test_the_feerate_diagram_decides() -> None:
    assert improves_diagram([(100, 1000)], [(100, 1001)])
    assert not improves_diagram([(100, 1000)], [(100, 1000)])
    assert not improves_diagram([(100, 1000)], [(300, 2000)])  # more fee, lower rate: worse at first
    assert improves_diagram([(100, 1000), (100, 100)], [(150, 1600)])


def test_format_money_is_cores() -> None:
    assert [format_money(v) for v in (0, 500, 1000, 100_000_000, 123_456_789)] == [
        "0.00", "0.000005", "0.00001", "1.00", "1.23456789"]


def test_the_transaction_feed_hears_replacements_and_block_conflicts(backend: Backend) -> None:
    """Issue #21: what left the mempool without being mined is named (MempoolRemoved), the
    replaced transaction with its descendants, and one a block's conflict pushed out."""
    from twisted_paychan.chain.embedded import miner
    from twisted_paychan.chain.feed import BlockConnected, ChainEvent, MempoolAdded, MempoolRemoved

    node = _node(backend)
    coin, other = _coin(backend), _coin(backend)
    events: list[ChainEvent] = []
    watch = backend.chain.watch_transactions(events.append)
    first = spend([coin], [(BOB.p2pkh, 99_000)])
    node.accept(first)
    child = spend([Coin(OutPoint(txid_of(first), 0), 99_000, BOB)], [(ALICE.p2pkh, 98_000)])
    node.accept(child)
    better = spend([coin], [(ALICE.p2pkh, 97_000)])
    node.accept(better)
    watch.sync()
    assert [type(e) for e in events] == [MempoolAdded, MempoolAdded, MempoolRemoved, MempoolAdded]
    removed = events[2]
    assert isinstance(removed, MempoolRemoved) and sorted(removed.txids) == sorted([txid_of(first), txid_of(child)])

    events.clear()
    pending = spend([other], [(BOB.p2pkh, 99_000)])
    node.accept(pending)
    rival = spend([other], [(ALICE.p2pkh, 99_500)])  # pays less: only a block can take it
    block = miner.build_block(node.block_hash_at(node.height), node.height + 1, node.next_block_time(),
                              BOB.p2pkh, [rival], 500)
    assert node.submit_block(block.raw).accepted
    watch.sync()
    assert [type(e) for e in events] == [MempoolAdded, BlockConnected, MempoolRemoved]
    assert list(events[2].txids) == [txid_of(pending)]  # type: ignore[union-attr]
    watch.cancel()


def test_a_wallet_loses_a_replaced_incoming_payment(backend: Backend) -> None:
    """The wallet, following the feed: an incoming payment replaced by one paying elsewhere
    leaves its unconfirmed balance; its coins are what the node lists."""
    from twisted.internet.defer import Deferred

    from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
    from twisted_paychan.wallet import MemoryWallet

    def now(d: Deferred) -> object:  # type: ignore[type-arg]
        out: list[object] = []
        d.addBoth(out.append)
        return out[0]

    wallet = MemoryWallet(backend.chain)
    wallet.start()
    script = address_to_script(str(now(wallet.new_address())), REGTEST)
    coin = _coin(backend)
    _node(backend).accept(spend([coin], [(script, 99_000)]))
    assert now(wallet.balance()).unconfirmed == 99_000  # type: ignore[attr-defined]
    _node(backend).accept(spend([coin], [(BOB.p2wpkh, 97_000)]))  # more fee: replaces it
    assert now(wallet.balance()).total == 0  # type: ignore[attr-defined]
    assert _node(backend).unspent_outputs(script) == []
    wallet.stop()
