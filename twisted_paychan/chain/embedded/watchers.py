"""
Spend and block notifications, delivered later on the reactor, never re-entrantly.

A chain calls :meth:`Watchers.touched` with the outpoints a change spends (the inputs of a
transaction that entered the mempool, of the blocks connected or disconnected), and says
whether it may have changed any spend already seen (a block deepens every confirmed spend; a
mempool that lost a transaction loses its spends). Only the watchers of those outpoints are
looked at, and, after a block, those whose outpoint has a spender: what a change costs follows
the change, not the number of watches (issue #21). :meth:`Watchers.refresh` looks at every
watcher, for a chain that cannot say what changed; :meth:`Watchers.new_tip` is called for
every new best block. Each spend watcher remembers the last event
it was given and gets a new one only when the spending transaction or its status differs
(status includes the confirmation count, so a spend watcher hears about every block until it
cancels). Events go into one queue flushed by a single ``callLater(0, ...)``, so they arrive in
the order they happened whatever the reactor's ordering of same-time calls; a long queue is
delivered over several turns, so the reactor reads its sockets in between.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_paychan.chain.interfaces import ICancellable
from twisted_paychan.chain.types import ChainTip, OutPoint, SpendEvent, TxState, TxStatus
from twisted_paychan.chain.watchlists import SpendWatch, Watch, WatchLists, deliver

log = Logger()

#: Events delivered per reactor turn; each may cost a store write and a few effects (~0.1 ms).
EVENTS_PER_TURN = 100


class _Lists(WatchLists[SpendWatch]):
    """The watch lists, and a cancelled spend watch also out of ``spent``."""

    def __init__(self, spend_watch: type[SpendWatch], spent: dict[SpendWatch, None]) -> None:
        super().__init__(spend_watch)
        self._spent_too = spent

    def forget(self, watch: Watch) -> None:
        super().forget(watch)
        if isinstance(watch, SpendWatch):
            self._spent_too.pop(watch, None)


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
        #: Watchers whose outpoint had a spender when last looked at: a block changes their
        #: status. A cancelled one leaves at once: its callback holds a finished channel.
        self._spent: dict[SpendWatch, None] = {}
        self._lists = _Lists(SpendWatch, self._spent)
        self._queue: deque[tuple[Watch, object]] = deque()
        self._flush_call: Optional[IDelayedCall] = None

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        watch = self._lists.add_spend(outpoint, callback)
        self._refresh_one(watch)
        return watch

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._lists.add_blocks(callback)

    @property
    def watching(self) -> int:
        """How many spend watches are live."""
        return len(self._lists.spends)

    def refresh(self) -> None:
        """Look at every spend watcher."""
        for watch in list(self._lists.spends):
            self._refresh_one(watch)

    def touched(self, outpoints: Iterable[OutPoint], seen_spends_changed: bool) -> None:
        """A change spent (or unspent) ``outpoints``; with ``seen_spends_changed``, it may also
        have changed the status of spends already seen (a block, a transaction leaving the
        mempool)."""
        by_outpoint = self._lists.by_outpoint
        looked: set[SpendWatch] = set()
        for point in outpoints:
            for watch in by_outpoint.get(point, ()):
                if watch not in looked:
                    looked.add(watch)
                    self._refresh_one(watch)
        if seen_spends_changed:
            for watch in list(self._spent):
                if watch.cancelled:
                    del self._spent[watch]
                elif watch not in looked:
                    self._refresh_one(watch)

    def new_tip(self, tip: ChainTip) -> None:
        for watch in list(self._lists.blocks):
            self._enqueue(watch, tip)

    def _refresh_one(self, watch: SpendWatch) -> None:
        txid = self._spender_of(watch.outpoint)
        last = watch.last
        if txid is None:
            self._spent.pop(watch, None)
            if last is None or last.status.state is TxState.UNKNOWN:
                return
            # Its spend vanished (reorg, or evicted): say so once, with the tx we last reported.
            event = SpendEvent(watch.outpoint, last.spending_txid, last.spending_tx, TxStatus(TxState.UNKNOWN))
        else:
            # The same spender as last time: its bytes are known, not read again.
            raw = last.spending_tx if last is not None and last.spending_txid == txid else self._raw_of(txid)
            if raw is None:  # pragma: no cover - a spender the chain cannot show is a chain bug
                return
            event = SpendEvent(watch.outpoint, txid, raw, self._status_of(txid))
            if not watch.cancelled:
                self._spent[watch] = None
        if watch.is_news(event):
            self._enqueue(watch, event)

    def _enqueue(self, watch: Watch, event: object) -> None:
        self._queue.append((watch, event))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        # Deliver only what was queued before this flush (callbacks may queue more), and at
        # most EVENTS_PER_TURN of it: a block settling a thousand channels must not keep a
        # handshake waiting for all thousand (issue #21). The rest follows on the next turn,
        # in order.
        for _ in range(min(len(self._queue), EVENTS_PER_TURN)):
            watch, event = self._queue.popleft()
            deliver(watch, event, log)
        if self._queue and self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
