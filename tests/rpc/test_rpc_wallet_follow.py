"""Issue #21 against the embedded node's JSON-RPC server, counting the methods it is asked: a
wallet on RpcChain scans once (one ``scantxoutset``, whatever the number of scripts, also for a
restore) and then costs a few calls per block, the same with 10 payout scripts as with 500;
spend watches cost one ``gettxspendingprevout`` per poll however many there are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator

import pytest_twisted

from chain_txs import Coin, Key, spend
from rpc_harness import Harness, start_harness
from twisted_paychan.wallet import MemoryWallet
from twisted_paychan.wallet.restore import find_coins

ALICE = Key.from_seed(b"rpc wallet follow alice")


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = await start_harness(tmp_path)
    try:
        yield made
    finally:
        await made.close()


def counted(harness: Harness) -> Counter[str]:
    """The methods the node's RPC server is asked from now on (a batch counts each call)."""
    methods = harness.server.port.factory.wrappedFactory.resource.methods  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    real = methods.dispatch

    def dispatch(method: str, params: Any) -> Any:
        counts[method] += 1
        return real(method, params)

    methods.dispatch = dispatch
    return counts


async def _calls_per_block(harness: Harness, counts: Counter[str], payouts: int) -> Counter[str]:
    wallet = MemoryWallet(harness.chain)
    scripts = [await wallet.settlement_payout_script(i.to_bytes(32, "big")) for i in range(1, payouts + 1)]
    for script in scripts[:3]:
        harness.inner.fund(script, 50_000)
    counts.clear()
    await wallet.refresh()  # the one full scan, then the watch's first poll
    assert counts["scantxoutset"] == 1
    assert (await wallet.balance()).confirmed == 150_000
    counts.clear()
    blocks = 4
    for i in range(blocks):
        harness.inner.fund(scripts[3 + i], 20_000)  # a block paying one more of our scripts
        await wallet.refresh()
    asked = Counter(counts)
    assert (await wallet.balance()).confirmed == 150_000 + blocks * 20_000
    per_block = Counter({m: n // blocks for m, n in asked.items()})
    assert sum(per_block.values()) * blocks == sum(asked.values()), asked  # the same every block
    wallet.stop()
    return per_block


@pytest_twisted.ensureDeferred
async def test_calls_per_block_do_not_grow_with_the_wallet(harness: Harness) -> None:
    counts = counted(harness)
    small = await _calls_per_block(harness, counts, 10)
    big = await _calls_per_block(harness, counts, 500)
    assert small == big
    assert "scantxoutset" not in small
    assert small == Counter({"getbestblockhash": 1, "getblockheader": 1, "getblock": 1, "getrawmempool": 1})


@pytest_twisted.ensureDeferred
async def test_restore_finds_every_payout_coin_with_one_scantxoutset(harness: Harness) -> None:
    old = MemoryWallet(harness.chain)
    payouts = [await old.settlement_payout_script(i.to_bytes(32, "big")) for i in range(1, 31)]
    for i, script in enumerate(payouts[::3]):
        harness.inner.fund(script, 10_000 + i)
    counts = counted(harness)
    new = MemoryWallet(harness.chain, mnemonic=old.mnemonic())
    report = await find_coins(new, harness.chain)
    assert counts["scantxoutset"] == 1 and report.scans == 1
    assert report.coins == 10 and report.keys["payout"] == 29  # the last one in use, 28, and all below
    assert (await new.balance()).confirmed == sum(10_000 + i for i in range(10))
    assert counts["scantxoutset"] == 1


@pytest_twisted.ensureDeferred
async def test_spend_watches_cost_one_gettxspendingprevout_per_poll(harness: Harness) -> None:
    """Issue #21: every unresolved spend watch is asked about in one call, not one each."""
    per_poll = []
    for watches in (5, 60):
        coins = [Coin(harness.inner.fund(ALICE.p2pkh, 20_000), 20_000, ALICE) for _ in range(watches)]
        cancels = [harness.chain.watch_spend(c.outpoint, lambda e: None) for c in coins]
        await harness.chain.poll()  # each new watch's first look
        counts = counted(harness)
        for _ in range(3):
            await harness.chain.poll()
        per_poll.append(counts["gettxspendingprevout"])
        for cancel in cancels:
            cancel.cancel()
    assert per_poll == [3, 3]


@pytest_twisted.ensureDeferred
async def test_a_following_wallet_makes_spend_watches_free(harness: Harness) -> None:
    """While a wallet follows (the mempool copy is fresh every poll), the copy answers the
    spend watches: no gettxspendingprevout at all, and a mempool spend is still heard."""
    wallet = MemoryWallet(harness.chain)
    await wallet.refresh()
    coins = [Coin(harness.inner.fund(ALICE.p2pkh, 20_000), 20_000, ALICE) for _ in range(30)]
    heard: list[Any] = []
    for c in coins:
        harness.chain.watch_spend(c.outpoint, heard.append)
    await harness.chain.poll()
    counts = counted(harness)
    raw = spend([coins[0]], [(ALICE.p2wpkh, 19_000)])
    await harness.chain.broadcast(raw)
    for _ in range(3):
        await harness.chain.poll()
    assert counts["gettxspendingprevout"] == 0
    assert [e.spending_tx for e in heard] == [raw]
    wallet.stop()
