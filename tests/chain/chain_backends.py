"""
Factories of IChain backends for the conformance suite: each wraps a chain with the few
test-only powers the suite needs (mine, fund a script, move time, deliver notifications).

To run the suite on another backend, write one factory returning a :class:`Backend` and add
its name to ``BACKENDS`` in ``test_chain_conformance.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from chain_txs import ANYONE_CAN_SPEND, Coin, spend, txid_of
from twisted_paychan.chain.embedded import miner
from twisted_paychan.chain.embedded.chain import EmbeddedChain
from twisted_paychan.chain.interfaces import IChain
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.chain.types import OutPoint

#: Where test clocks start: a recent time, below this machine's real clock (the kernel refuses
#: blocks more than 2 hours ahead of it).
START_TIME = 1_700_000_000


@dataclass
class Backend:
    name: str
    chain: IChain
    #: Mine n blocks (the first confirms the mempool); their hashes.
    mine: Callable[[int], list[bytes]]
    #: A confirmed output of ``value`` paying ``script``, spendable now.
    fund: Callable[[bytes, int], OutPoint]
    #: Move the chain's clock forward by this many seconds.
    advance: Callable[[float], None]
    #: Fires once notifications due now have been delivered.
    settle: Callable[[], "Deferred[None]"]
    close: Callable[[], None] = lambda: None
    extra: dict[str, object] = field(default_factory=dict)
    #: Replace the top n blocks with n + 1 empty ones (their transactions go back to the
    #: mempool); the new blocks' hashes.
    reorg: Optional[Callable[[int], list[bytes]]] = None


def _clock() -> Clock:
    clock = Clock()
    clock.advance(START_TIME)
    return clock


def _settler(clock: Clock) -> Callable[[], "Deferred[None]"]:
    def settle() -> "Deferred[None]":
        clock.advance(0)
        return succeed(None)

    return settle


def memory_backend(tmp_path: Path) -> Backend:
    clock = _clock()
    chain = MemoryChain(clock)
    return Backend("memory", chain, chain.mine, chain.credit, clock.advance, _settler(clock), extra={"clock": clock},
                   reorg=chain.reorg)


def embedded_backend(tmp_path: Path) -> Backend:
    clock = _clock()
    chain = EmbeddedChain.open(tmp_path / "node", clock)
    chain.mine(101)  # coinbase 1 is mature for a block at height 101 onwards
    spare: list[Coin] = []

    def coinbase_coin() -> Coin:
        if not spare:
            last_mature = chain.node.height + 1 - 100
            coins = chain.node.unspent_outputs(ANYONE_CAN_SPEND)
            spare.extend(
                Coin(u.outpoint, u.value, None)
                for u in coins
                if u.coinbase and u.height is not None and u.height <= last_mature
            )
        return spare.pop()

    def fund(script: bytes, value: int) -> OutPoint:
        coin = coinbase_coin()
        raw = spend([coin], [(script, value), (ANYONE_CAN_SPEND, coin.value - value - 1_000)])
        chain.node.accept(raw)
        chain.mine(1)
        return OutPoint(txid_of(raw), 0)

    def reorg(depth: int) -> list[bytes]:
        node = chain.node
        parent = node.block_hash_at(node.height - depth)
        hashes = []
        for height in range(node.height - depth + 1, node.height + 2):
            block = miner.build_block(parent, height, node.next_block_time() + 1, ANYONE_CAN_SPEND, [], 0, tag=b"fork")
            node.submit_block(block.raw)
            parent = block.block_hash
            hashes.append(block.block_hash)
        assert node.block_hash_at(node.height) == hashes[-1]
        return hashes

    return Backend("embedded", chain, chain.mine, fund, clock.advance, _settler(clock), chain.close, {"clock": clock},
                   reorg=reorg)


FACTORIES: dict[str, Callable[[Path], Backend]] = {
    "memory": memory_backend,
    "embedded": embedded_backend,
}
