"""
The watch lists of ``RpcChain``: what each spend watcher knows about its outpoint's spender,
and the event it should hear next.

A spend watcher's spender is found in one of three places, each poll: a new block that spends
the outpoint; the mempool (``gettxspendingprevout``); or, once, when the watch starts, the
recent blocks below the tip (the outpoint may have been spent before anyone watched). From
what it knows, :meth:`SpendWatch.event` says what the watcher should hear: the spend and its
status, ``MEMPOOL`` or ``CONFIRMED`` with the confirmation count, or ``UNKNOWN`` once if the
spend vanished (evicted, or reorganised out and not back in the mempool). A watcher hears an
event only when it differs from the last one, so it hears every block that deepens a
confirmed spend, like the embedded chain's watchers (the bookkeeping both share is
``chain.watchlists``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.logger import Logger

from twisted_paychan.chain import watchlists
from twisted_paychan.chain.rpc.follower import Header
from twisted_paychan.chain.types import OutPoint, SpendEvent, TxState, TxStatus
from twisted_paychan.chain.watchlists import Watch

__all__ = ["SpendWatch", "Watch", "WatchLists"]

log = Logger()


class SpendWatch(watchlists.SpendWatch):
    def __init__(
        self, owner: watchlists.WatchLists[Any], outpoint: OutPoint, callback: Callable[[SpendEvent], Any]
    ) -> None:
        super().__init__(owner, outpoint, callback)
        #: The initial look for a spend made before the watch started has been done.
        self.checked = False
        self.spender_txid: Optional[bytes] = None
        self.spender_raw: Optional[bytes] = None
        #: The active-chain block holding the spender, if it is confirmed.
        self.spend_block: Optional[Header] = None
        #: The spender was in the mempool at the last poll.
        self.in_mempool = False

    @property
    def resolved(self) -> bool:
        """Spent in a block of the active chain: no mempool or rescan needed."""
        return self.spend_block is not None

    def found(self, txid: bytes, raw: bytes, block: Optional[Header]) -> None:
        self.spender_txid = txid
        self.spender_raw = raw
        self.spend_block = block
        self.in_mempool = block is None
        self.checked = True

    def event(self, tip: Header) -> Optional[SpendEvent]:
        if self.spender_txid is None or self.spender_raw is None:
            return None
        if self.spend_block is not None:
            block = self.spend_block
            status = TxStatus(TxState.CONFIRMED, tip.height - block.height + 1, block.height, block.block_hash)
        elif self.in_mempool:
            status = TxStatus(TxState.MEMPOOL)
        else:
            status = TxStatus(TxState.UNKNOWN)
        return SpendEvent(self.outpoint, self.spender_txid, self.spender_raw, status)


class WatchLists(watchlists.WatchLists[SpendWatch]):
    def __init__(self) -> None:
        super().__init__(SpendWatch)

    def events(self, connected: list[Header], tip: Header) -> list[tuple[Watch, object]]:
        """What to deliver after a poll: each new block to the block watchers, then each spend
        watcher's event if it changed."""
        queue: list[tuple[Watch, object]] = []
        for header in connected:
            queue.extend((w, header.chain_tip()) for w in self.blocks)
        for watch in self.spends:
            if watch.spender_txid is None:
                continue  # nothing to say, and no call made to learn it
            event = watch.event(tip)
            if event is not None and watch.is_news(event):
                queue.append((watch, event))
        return queue

    @staticmethod
    def deliver(queue: list[tuple[Watch, object]]) -> None:
        for watch, event in queue:
            watchlists.deliver(watch, event, log)
