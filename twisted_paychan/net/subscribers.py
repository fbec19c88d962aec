"""
Who listens to a manager's channel events: both ``ChannelManager``s keep their subscribers here.

A subscriber that raises is logged and the others still hear the event: an application's bug in
a listener must not stop the manager carrying out a channel's effects. The list is truthy only
while someone listens, so a hot path can skip building an event nobody would receive.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from twisted.logger import Logger

EventT = TypeVar("EventT")


class Subscribers(Generic[EventT]):
    log = Logger()

    def __init__(self) -> None:
        self._callbacks: list[Callable[[EventT], None]] = []

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def add(self, callback: Callable[[EventT], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns the unsubscriber."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def notify(self, event: EventT) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                self.log.failure("a channel event subscriber failed")
