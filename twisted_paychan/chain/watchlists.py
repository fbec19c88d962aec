"""
The spend and block watch lists every chain backend keeps, and the rule for handing them events.

A backend decides *when* to look (the embedded chain after every change, ``RpcChain`` after
every poll) and *what* a spend watcher should hear. What they share lives here: a watch knows
its callback and comes off its list when cancelled; a spend watcher hears an event only when it
differs from the last one it heard; a cancelled watch hears nothing more, and a callback that
raises is logged, never propagated into the chain.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Optional, TypeVar

from twisted.logger import Logger
from zope.interface import implementer

from twisted_paychan.chain.interfaces import ICancellable
from twisted_paychan.chain.types import ChainTip, OutPoint, SpendEvent


@implementer(ICancellable)
class Watch:
    """A block watcher, and the part of a spend watcher that is not about its outpoint."""

    def __init__(self, owner: "WatchLists[Any]", callback: Callable[..., Any]) -> None:
        self._owner = owner
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._owner.forget(self)


class SpendWatch(Watch):
    def __init__(self, owner: "WatchLists[Any]", outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> None:
        super().__init__(owner, callback)
        self.outpoint = outpoint
        self.last: Optional[SpendEvent] = None

    def is_news(self, event: SpendEvent) -> bool:
        """Whether ``event`` differs from the last event this watcher heard; if so, it becomes
        the last one."""
        if event != self.last:
            self.last = event
            return True
        return False


S = TypeVar("S", bound=SpendWatch)


class WatchLists(Generic[S]):
    """The spend watchers (of type ``spend_watch``, which a backend may extend with what it
    needs to know about the spender) and the block watchers of one chain, in the order they
    were added."""

    def __init__(self, spend_watch: type[S]) -> None:
        self._spend_watch = spend_watch
        # Dicts used as ordered sets: a cancel costs the same with ten thousand watches as
        # with ten (a list's remove did not), and a change finds its outpoint's watches at once.
        self.spends: dict[S, None] = {}
        #: The spend watchers of each outpoint, so a backend told which outpoints a transaction
        #: or block spends wakes only theirs.
        self.by_outpoint: dict[OutPoint, list[S]] = {}
        self.blocks: dict[Watch, None] = {}

    def add_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> S:
        watch = self._spend_watch(self, outpoint, callback)
        self.spends[watch] = None
        self.by_outpoint.setdefault(outpoint, []).append(watch)
        return watch

    def add_blocks(self, callback: Callable[[ChainTip], Any]) -> Watch:
        watch = Watch(self, callback)
        self.blocks[watch] = None
        return watch

    def forget(self, watch: Watch) -> None:
        if isinstance(watch, SpendWatch):
            self.spends.pop(watch, None)  # type: ignore[arg-type]  # every SpendWatch here is an S
            same = self.by_outpoint.get(watch.outpoint)
            if same is not None:
                same.remove(watch)  # type: ignore[arg-type]
                if not same:
                    del self.by_outpoint[watch.outpoint]
        else:
            self.blocks.pop(watch, None)

    def __bool__(self) -> bool:
        return bool(self.spends or self.blocks)


def deliver(watch: Watch, event: object, log: Logger) -> None:
    """Hand ``event`` to ``watch`` unless it was cancelled since the event was queued; a
    callback that raises is logged on the backend's ``log``."""
    if watch.cancelled:
        return
    try:
        watch.callback(event)
    except Exception:
        log.failure("chain watcher callback {callback!r} raised", callback=watch.callback)
