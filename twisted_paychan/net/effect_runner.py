"""
Carrying out a sans-IO machine's effects in order, for both channel objects.

``_perform`` does one effect and says what follows from it: nothing (None), the machine's next
effects when the outcome is known at once (a list), or a Deferred of them when the effect takes
time. A Deferred blocks the effects after it until its completion is known; the effects the
machine returns for that completion run first. A Deferred that has already fired (in-memory
backends) just goes on, without recursion, so a long run of synchronous effects never grows the
stack and nothing re-enters the machine.

Payments are the hot path: each is a few effects, some of them store writes whose Deferred has
usually fired by the time we see it. So the runner adds a single callback to each Deferred, and
an effect whose outcome needs no Deferred at all (an application handler that returned a plain
value) hands its next effects back directly.

A payment's store write does not hold back the effects after it (``_alongside``): the machine
itself keeps the order of payments (the server queues what arrives; the client sends a payment
only from its store's completion), so the next payment's write can join the same group commit.
Its completion's effects run after whatever is queued when it fires.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Generic, Optional, TypeVar, Union

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

E = TypeVar("E")

#: What ``_perform`` returns: nothing follows, the next effects now, or the next effects later.
Outcome = Union[None, list[E], "defer.Deferred[list[E]]"]


class EffectRunner(Generic[E]):
    """Runs effects of type ``E`` (a machine's closed union of effects) in order."""

    log = Logger()

    def __init__(self) -> None:
        self._queue: deque[E] = deque()
        self._running = False
        self._blocked = False
        #: Store writes running alongside (``_alongside``) not yet completed, and what waits for
        #: them all (``_after_alongside``).
        self._alongside_pending = 0
        self._alongside_waiters: list[Callable[[], None]] = []

    def _perform(self, effect: E) -> Outcome[E]:
        """Do one effect; return what follows from it (see the module docstring). A subclass
        dispatches on the effect's type over the whole union and ends in ``assert_never``, so an
        effect without a handler fails the type check, not a payment."""
        raise NotImplementedError

    def _effect_failed(self, failure: Failure) -> None:
        """An effect failed in a way the machine has no answer for: close down."""
        raise NotImplementedError

    def _run(self, effects: list[E]) -> None:
        queue = self._queue
        queue.extend(effects)
        if self._running or self._blocked:
            return
        self._running = True
        try:
            while queue and not self._blocked:
                outcome = self._perform(queue.popleft())
                if outcome is None:
                    continue
                if isinstance(outcome, list):
                    queue.extendleft(reversed(outcome))
                    continue
                self._blocked = True
                outcome.addBoth(self._completed)
        finally:
            self._running = False

    def _alongside(self, d: "defer.Deferred[list[E]]") -> Outcome[E]:
        """Let ``d`` (a store write with the machine's completion already added) run alongside
        the effects after it. One that has fired (an in-memory store) goes on in order."""
        if d.called:
            return d
        self._alongside_pending += 1
        d.addBoth(self._completed_alongside)
        return None

    def _completed_alongside(self, result: Union[list[E], Failure]) -> None:
        self._alongside_pending -= 1
        try:
            if isinstance(result, Failure):
                self._internal_error(result)
            else:
                try:
                    self._run(result)
                except BaseException:  # as a Deferred would catch it, and hand it to the errback
                    self._internal_error(Failure())
        finally:
            if self._alongside_pending == 0 and self._alongside_waiters:
                waiting, self._alongside_waiters = self._alongside_waiters, []
                for call in waiting:
                    call()

    def _after_alongside(self, call: Callable[[], None]) -> None:
        """``call()`` once every store write running alongside has completed and its effects
        have run (at once if none is pending): what ends a connection waits for the payments
        it stored, so that their news comes first."""
        if self._alongside_pending == 0:
            call()
        else:
            self._alongside_waiters.append(call)

    def _completed(self, result: Union[list[E], Failure]) -> None:
        """A Deferred from ``_perform`` fired: its effects go first, or, if it failed (or running
        them failed), we close down."""
        if isinstance(result, Failure):
            self._internal_error(result)
            return
        try:
            self._blocked = False
            self._queue.extendleft(reversed(result))
            if not self._running:  # else it fired at once, and the loop that performed it goes on
                self._run([])
        except BaseException:  # as a Deferred would catch it, and hand it to the errback
            self._internal_error(Failure())

    def _complete_now(self, completion: Callable[..., list[E]], *args: Any) -> Optional[list[E]]:
        """The machine's answer to an outcome known at once, as if a fired Deferred had called
        ``completion(*args)``: an exception in the machine closes down, like a failed one."""
        try:
            return completion(*args)
        except BaseException:  # as a Deferred would catch it
            self._internal_error(Failure())
            return None

    def _internal_error(self, failure: Failure) -> None:
        self.log.failure("{kind} effect failed; closing", failure, kind=type(self).__name__)
        self._queue.clear()
        self._blocked = False
        self._effect_failed(failure)
