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
from typing import Any, Callable, Optional

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
        self._queue: deque[tuple[Watch, object]] = deque()
        self._flush_call: Optional[IDelayedCall] = None

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        watch = self._lists.add_spend(outpoint, callback)
        self._refresh_one(watch)
        return watch

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._lists.add_blocks(callback)

    def refresh(self) -> None:
        for watch in list(self._lists.spends):
            self._refresh_one(watch)

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
