"""A refund racing a settlement near expiry, both ways, through the embedded node's real RPC
server: whichever pays more replaces the other in the mempool (Core 31's full RBF), a spend
watch hears the spender change, the loser is refused with Core's reason once the winner is in,
and the winner is what confirms. The refund carries the channel's lock time (final by now)."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_twisted

from chain_txs import Coin, Key, spend, txid_of
from rpc_harness import Harness, start_harness
from twisted_paychan.chain.types import BroadcastRejected, RejectKind, SpendEvent, TxState

CLIENT = Key.from_seed(b"race client")
SERVER = Key.from_seed(b"race server")


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = await start_harness(tmp_path)
    try:
        yield made
    finally:
        await made.close()


def _contract_output(harness: Harness) -> Coin:
    return Coin(harness.inner.fund(CLIENT.p2pkh, 1_000_000), 1_000_000, CLIENT)


def _refund(coin: Coin, fee: int, lock_time: int) -> bytes:
    return spend([coin], [(CLIENT.p2pkh, coin.value - fee)], lock_time=lock_time, sequence=0xFFFFFFFE)


def _settlement(coin: Coin, fee: int) -> bytes:
    return spend([coin], [(SERVER.p2pkh, 600_000), (CLIENT.p2pkh, coin.value - 600_000 - fee)])


@pytest.mark.parametrize("first", ["refund", "settlement"])
@pytest_twisted.ensureDeferred
async def test_the_one_that_pays_more_replaces_the_other(harness: Harness, first: str) -> None:
    chain = harness.chain
    coin = _contract_output(harness)
    lock_time = harness.node.height  # the expiry has passed: the refund is final
    events: list[SpendEvent] = []
    chain.watch_spend(coin.outpoint, events.append)
    await chain.poll()
    if first == "refund":
        early, late = _refund(coin, 1_000, lock_time), _settlement(coin, 5_000)
    else:
        early, late = _settlement(coin, 1_000), _refund(coin, 5_000, lock_time)
    await chain.broadcast(early)
    await chain.poll()
    assert events[-1].spending_txid == txid_of(early)
    await chain.broadcast(late)  # pays more: replaces it
    await chain.poll()
    assert (events[-1].spending_txid, events[-1].status.state) == (txid_of(late), TxState.MEMPOOL)
    with pytest.raises(BroadcastRejected) as caught:
        await chain.broadcast(early)  # the loser again: too cheap to take its place back
    assert caught.value.kind is RejectKind.FEE_TOO_LOW
    assert caught.value.reason.startswith("insufficient fee, rejecting replacement ")
    harness.inner.mine(1)
    await chain.poll()
    assert (events[-1].spending_txid, events[-1].status.state) == (txid_of(late), TxState.CONFIRMED)
    assert (await chain.tx_status(txid_of(early))).state is TxState.UNKNOWN
