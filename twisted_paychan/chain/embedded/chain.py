"""
``EmbeddedChain``: :class:`IChain` on the embedded regtest node, the project's default chain.

Answers are already-fired Deferreds (the node is in-process and synchronous); notifications are
delivered through the reactor by ``watchers``. The node itself stays reachable as
:attr:`EmbeddedChain.node` for what a JSON-RPC front end needs beyond IChain (blocks and headers
by hash or height, the mempool, UTXO scans, mining to a script).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Collection, Optional, Sequence, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_paychan.chain.embedded.index import parse_block
from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND, RegtestNode
from twisted_paychan.chain.embedded.watchers import Watchers
from twisted_paychan.chain.feed import BlockConnected, ChainEvent, FeedHub, catch_up_events, feed_tx
from twisted_paychan.chain.interfaces import ICancellable, IChain, ITransactionWatch
from twisted_paychan.chain.types import (
    BlockId,
    BroadcastRejected,
    ChainTip,
    OutPoint,
    OutputScan,
    SpendEvent,
    TxStatus,
    Utxo,
)


@implementer(IChain)
class EmbeddedChain:
    def __init__(self, node: RegtestNode) -> None:
        self.node = node
        self._watchers = Watchers(node.reactor, node.spender_of, node.tx_status, node.raw_transaction)
        node.on_block(self._watchers.new_tip)
        node.on_touched(self._watchers.touched)
        self._feed = FeedHub(node.reactor, self._catch_up)
        node.tx_feed = self._feed

    @classmethod
    def open(
        cls,
        datadir: Union[str, Path],
        reactor: IReactorTime,
        coinbase_script: bytes = ANYONE_CAN_SPEND,
        mine_every: Optional[float] = None,
    ) -> "EmbeddedChain":
        """Open (or create) a node on ``datadir``; with ``mine_every``, mine a block every
        that many seconds of ``reactor``'s clock."""
        chain = cls(RegtestNode(datadir, reactor, coinbase_script))
        if mine_every is not None:
            chain.node.start_mining(mine_every)
        return chain

    def close(self) -> None:
        self.node.close()

    # -- IChain ----------------------------------------------------------------------------

    def broadcast(self, tx: bytes) -> "Deferred[bytes]":
        try:
            return succeed(self.node.accept(tx))
        except BroadcastRejected as e:
            return fail(e)

    def tx_status(self, txid: bytes) -> "Deferred[TxStatus]":
        return succeed(self.node.tx_status(txid))

    def get_transaction(self, txid: bytes) -> "Deferred[Optional[bytes]]":
        return succeed(self.node.raw_transaction(txid))

    def tip(self) -> "Deferred[ChainTip]":
        return succeed(self.node.tip())

    def unspent_outputs(self, script_pubkey: bytes) -> "Deferred[list[Utxo]]":
        return succeed(self.node.unspent_outputs(script_pubkey))

    def scan_outputs(self, scripts: Collection[bytes]) -> "Deferred[OutputScan]":
        tip = self.node.tip()
        return succeed(OutputScan(self.node.scan(scripts), BlockId(tip.height, tip.block_hash)))

    def watch_transactions(self, callback: Callable[[ChainEvent], Any], since: Sequence[BlockId] = ()) -> ITransactionWatch:
        return self._feed.watch(callback, since)

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        return self._watchers.watch_spend(outpoint, callback)

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._watchers.watch_blocks(callback)

    def _catch_up(self, since: Sequence[BlockId]) -> list[ChainEvent]:
        node = self.node

        def hash_at(height: int) -> Optional[bytes]:
            return node.block_hash_at(height) if 0 <= height <= node.height else None

        def block_at(height: int) -> BlockConnected:
            block = parse_block(node.block_at(height))
            return BlockConnected(height, block.block_hash, [feed_tx(t, tx) for t, tx in zip(block.txids, block.txs)])

        mempool = [feed_tx(e.txid, e.tx) for e in node.mempool_entries()]
        return catch_up_events(since, node.height, hash_at, block_at, mempool)

    # -- test and tool helpers -------------------------------------------------------------

    def mine(self, count: int = 1, script_pubkey: Optional[bytes] = None) -> list[bytes]:
        """Mine ``count`` blocks (the first takes the mempool); their hashes."""
        return self.node.generate(count, script_pubkey)
