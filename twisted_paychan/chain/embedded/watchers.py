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
from zope.interface import implementer

from twisted_paychan.chain.interfaces import ICancellable
from twisted_paychan.chain.types import ChainTip, OutPoint, SpendEvent, TxState, TxStatus

log = Logger()


@implementer(ICancellable)
class _Watch:
    def __init__(self, owner: "Watchers", callback: Callable[..., Any]) -> None:
        self._owner = owner
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._owner._forget(self)


class _SpendWatch(_Watch):
    def __init__(self, owner: "Watchers", outpoint: OutPoint, callback: Callable[..., Any]) -> None:
        super().__init__(owner, callback)
        self.outpoint = outpoint
        self.last: Optional[SpendEvent] = None


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
        self._spends: list[_SpendWatch] = []
        self._blocks: list[_Watch] = []
        self._queue: deque[tuple[_Watch, object]] = deque()
        self._flush_call: Optional[IDelayedCall] = None

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        watch = _SpendWatch(self, outpoint, callback)
        self._spends.append(watch)
        self._refresh_one(watch)
        return watch

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        watch = _Watch(self, callback)
        self._blocks.append(watch)
        return watch

    def refresh(self) -> None:
        for watch in list(self._spends):
            self._refresh_one(watch)

    def new_tip(self, tip: ChainTip) -> None:
        for watch in list(self._blocks):
            self._enqueue(watch, tip)

    def _refresh_one(self, watch: _SpendWatch) -> None:
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
        if event != watch.last:
            watch.last = event
            self._enqueue(watch, event)

    def _enqueue(self, watch: _Watch, event: object) -> None:
        self._queue.append((watch, event))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        # Deliver only what was queued before this flush; callbacks may queue more.
        for _ in range(len(self._queue)):
            watch, event = self._queue.popleft()
            if watch.cancelled:
                continue
            try:
                watch.callback(event)
            except Exception:
                log.failure("chain watcher callback {callback!r} raised", callback=watch.callback)

    def _forget(self, watch: _Watch) -> None:
        if isinstance(watch, _SpendWatch):
            self._spends.remove(watch)
        else:
            self._blocks.remove(watch)
