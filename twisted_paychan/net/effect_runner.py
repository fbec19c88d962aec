"""
Carrying out a sans-IO machine's effects in order, for both channel objects.

An effect that takes time (its ``_perform`` returns a Deferred) blocks the effects after it
until its completion is known; the effects the machine returns for that completion run first.
A Deferred that has already fired (in-memory backends) just goes on, without recursion, so a
long run of synchronous effects never grows the stack and nothing re-enters the machine.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure


class EffectRunner:
    log = Logger()

    def __init__(self) -> None:
        self._queue: list = []
        self._running = False
        self._blocked = False

    def _perform(self, effect: Any) -> Optional[defer.Deferred]:
        """Do one effect; return a Deferred of the machine's next effects if it takes time."""
        raise NotImplementedError

    def _effect_failed(self, failure: Failure) -> None:
        """An effect failed in a way the machine has no answer for: close down."""
        raise NotImplementedError

    def _run(self, effects: list) -> None:
        self._queue.extend(effects)
        if self._running or self._blocked:
            return
        self._running = True
        try:
            while self._queue and not self._blocked:
                d = self._perform(self._queue.pop(0))
                if d is not None:
                    self._blocked = True
                    d.addCallback(self._resume).addErrback(self._internal_error)
        finally:
            self._running = False

    def _resume(self, effects: list) -> None:
        self._blocked = False
        self._queue[:0] = effects
        self._run([])

    def _internal_error(self, failure: Failure) -> None:
        self.log.failure("{kind} effect failed; closing", failure, kind=type(self).__name__)
        self._queue.clear()
        self._blocked = False
        self._effect_failed(failure)
