"""
``RpcChain``'s transaction feed (``chain.feed``): each watch brought to the node's tip at
every poll, with a number of calls that follows the blocks and the mempool, never the
listener's scripts or coins (issue #21).

Each watch remembers the blocks it was handed (newest first, :data:`KEEP` of them) and the
mempool transactions it was told of. At the end of a poll, for each watch: the newest of its
blocks still on the best chain (the follower's headers answer for recent heights, one
``getblockhash`` for older ones); a :class:`BlockDisconnected` for each block above it; a
:class:`BlockConnected` for each block from there to the tip (``getblock <hash> 0``, the same
fetch the spend watches use, cached, so a block is read once whoever needs it); then the
mempool's difference from what the watch was told, from the client's mempool copy
(``getrawmempool``, then only the new transactions, in batches). A watch that starts far behind
(a wallet down for a week) reads every block it missed, one ``getblock`` each.
"""

from __future__ import annotations

from typing import Any, Callable, Final, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from twisted_paychan.chain.feed import (
    BlockConnected,
    BlockDisconnected,
    ChainEvent,
    FeedGap,
    MempoolAdded,
    MempoolRemoved,
    feed_tx,
)
from twisted_paychan.chain.interfaces import ITransactionWatch
from twisted_paychan.chain.rpc.follower import BlockSource, ChainFollower
from twisted_paychan.chain.rpc.mempool import RemoteMempool
from twisted_paychan.chain.types import BlockId, from_display_hex
from twisted_paychan.rpc.connection import RpcConnection

log = Logger()

#: Blocks a watch remembers having been handed: how deep a reorganisation it can be led back
#: through (deeper: a FeedGap).
KEEP: Final = 288


@implementer(ITransactionWatch)
class RpcFeedWatch:
    def __init__(self, feed: "RpcTransactionFeed", callback: Callable[[ChainEvent], Any], since: Sequence[BlockId]) -> None:
        self._feed = feed
        self.callback = callback
        self.cancelled = False
        #: The blocks handed over, newest first (the caller's ``since`` to begin with).
        self.blocks: list[BlockId] = list(since)[:KEEP]
        #: Txids handed over as in the mempool.
        self.mempool: set[bytes] = set()

    def sync(self) -> "Deferred[None]":
        """Polls the node (events are delivered at the end of the poll)."""
        return self._feed.poll()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._feed.watches.pop(self, None)


class RpcTransactionFeed:
    """The feed watches of one ``RpcChain``; ``poll`` is the chain's."""

    def __init__(
        self,
        connection: RpcConnection,
        follower: ChainFollower,
        blocks: BlockSource,
        mempool: RemoteMempool,
        poll: Callable[[], "Deferred[None]"],
    ) -> None:
        self._connection = connection
        self._follower = follower
        self._blocks = blocks
        self._mempool = mempool
        self.poll = poll
        self.watches: dict[RpcFeedWatch, None] = {}

    def watch(self, callback: Callable[[ChainEvent], Any], since: Sequence[BlockId]) -> RpcFeedWatch:
        watch = RpcFeedWatch(self, callback, since)
        self.watches[watch] = None
        return watch

    async def advance(self) -> list[tuple[RpcFeedWatch, list[ChainEvent]]]:
        """What each watch should hear to be at the follower's tip and the mempool copy (which
        the caller refreshed); delivered by the caller."""
        out = []
        for watch in list(self.watches):
            events = await self._blocks_for(watch)
            mined = {tx.txid for e in events if isinstance(e, BlockConnected) for tx in e.txs}
            now = self._mempool.txs
            removed = [t for t in watch.mempool if t not in now and t not in mined]
            added = [feed_tx(t, tx) for t, tx in now.items() if t not in watch.mempool]
            watch.mempool = set(now)
            if removed:
                events.append(MempoolRemoved(removed))
            if added:
                events.append(MempoolAdded(added))
            if events:
                out.append((watch, events))
        return out

    async def _blocks_for(self, watch: RpcFeedWatch) -> list[ChainEvent]:
        tip = self._follower.tip
        assert tip is not None
        tip_id = BlockId(tip.height, tip.block_hash)
        if not watch.blocks:
            watch.blocks = [tip_id]  # no since: from the tip on
            return []
        if watch.blocks[0] == tip_id:
            return []
        joined = None
        for index, held in enumerate(watch.blocks):
            if held.height <= tip.height and await self._hash_at(held.height) == held.block_hash:
                joined = index
                break
        if joined is None:
            log.warn("a transaction feed watch is on no block of the node's best chain; it starts again from the tip")
            watch.blocks = [tip_id]
            return [FeedGap(tip_id)]
        events: list[ChainEvent] = [BlockDisconnected(b.height, b.block_hash) for b in watch.blocks[:joined]]
        kept = watch.blocks[joined:]
        for height in range(kept[0].height + 1, tip.height + 1):
            block_hash = await self._hash_at(height)
            block = await self._blocks.get(block_hash)
            events.append(BlockConnected(height, block_hash, block.txs))
            kept.insert(0, BlockId(height, block_hash))
        watch.blocks = kept[:KEEP]
        return events

    async def _hash_at(self, height: int) -> bytes:
        header = self._follower.headers.get(height)
        if header is not None:
            return header.block_hash
        answer = await self._connection.call("getblockhash", height)
        return from_display_hex(answer)
