"""
Spend and block notifications, delivered later on the reactor, never re-entrantly.

A chain calls :meth:`Watchers.refresh` after anything that may change what a watcher sees (a
transaction entered the mempool, blocks were connected or disconnected) and
:meth:`Watchers.new_tip` for every new best block. Each spend watcher remembers the last event
it was given and gets a new one only when the spending transaction or its status differs
(status includes the confirmation count, so a spend watcher hears about every block until it
cancels). Events go into one queue flushed by a single ``callLater(0, ...)``, so they arrive in
the order they happened whatever the reactor's ordering of same-time calls.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Collection, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_paychan.chain.interfaces import ICancellable
from twisted_paychan.chain.types import ChainTip, OutPoint, SpendEvent, TxState, TxStatus
from twisted_paychan.chain.watchlists import SpendWatch, Watch, WatchLists, deliver

log = Logger()


class Watchers:
    """The watch lists of one chain.

    ``spender_of(outpoint)`` answers the txid spending an outpoint (mempool or active chain) or
    None; ``status_of(txid)`` and ``raw_of(txid)`` describe a transaction the chain knows.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        spender_of: Callable[[OutPoint], Optional[bytes]],
        status_of: Callable[[bytes], TxStatus],
        raw_of: Callable[[bytes], Optional[bytes]],
    ) -> None:
        self._reactor = reactor
        self._spender_of = spender_of
        self._status_of = status_of
        self._raw_of = raw_of
        self._lists = WatchLists(SpendWatch)
        #: Spend watches by outpoint, for a refresh that names what changed.
        self._by_outpoint: dict[OutPoint, list[SpendWatch]] = {}
        self._queue: deque[tuple[Watch, object]] = deque()
        self._flush_call: Optional[IDelayedCall] = None

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        watch = self._lists.add_spend(outpoint, callback)
        self._by_outpoint.setdefault(outpoint, []).append(watch)
        self._refresh_one(watch)
        return watch

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._lists.add_blocks(callback)

    def refresh(self, spent: Optional[Collection[OutPoint]] = None) -> None:
        """Look again at every spend watch, or, when the chain says which outpoints a change
        spent (a mempool acceptance), only at the watches of those: with one watch per open
        channel, looking at all of them on every contract made opening channels quadratic."""
        if spent is None:
            for watch in list(self._lists.spends):
                self._refresh_one(watch)
            return
        for point in spent:
            for watch in self._watching(point):
                self._refresh_one(watch)

    def _watching(self, point: OutPoint) -> list[SpendWatch]:
        """The live watches of ``point`` (the index drops cancelled ones as it meets them)."""
        watches = self._by_outpoint.get(point)
        if not watches:
            return []
        live = [w for w in watches if not w.cancelled]
        if len(live) != len(watches):
            if live:
                self._by_outpoint[point] = live
            else:
                del self._by_outpoint[point]
        return live

    def new_tip(self, tip: ChainTip) -> None:
        for watch in list(self._lists.blocks):
            self._enqueue(watch, tip)

    def _refresh_one(self, watch: SpendWatch) -> None:
        txid = self._spender_of(watch.outpoint)
        if txid is None:
            if watch.last is None or watch.last.status.state is TxState.UNKNOWN:
                return
            # Its spend vanished (reorg, or evicted): say so once, with the tx we last reported.
            event = SpendEvent(watch.outpoint, watch.last.spending_txid, watch.last.spending_tx, TxStatus(TxState.UNKNOWN))
        else:
            raw = self._raw_of(txid)
            if raw is None:  # pragma: no cover - a spender the chain cannot show is a chain bug
                return
            event = SpendEvent(watch.outpoint, txid, raw, self._status_of(txid))
        if watch.is_news(event):
            self._enqueue(watch, event)

    def _enqueue(self, watch: Watch, event: object) -> None:
        self._queue.append((watch, event))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        # Deliver only what was queued before this flush; callbacks may queue more.
        for _ in range(len(self._queue)):
            watch, event = self._queue.popleft()
            deliver(watch, event, log)
