"""
Stopping ``paychan pay`` when asked: SIGINT (Ctrl-C) or SIGTERM ends the stream of payments
between two payments, never in the middle of one.

The signal only sets a flag (and wakes whoever waits on :attr:`StopRequest.asked`); the pay loop
checks it before each payment, so the payment in flight finishes (or fails) as it would have,
its change already stored; the channel is then disconnected without settling and stays stored
for the next ``paychan pay`` to resume. A second signal while that is happening is not lost in a
flag: the default handling comes back after the first, so a second Ctrl-C interrupts at once
(``KeyboardInterrupt``; the store's write-ahead rules keep the channel safe even then).

The exit status is the shell's for a process ended by the signal: 128 + its number (130 for
SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import types
from typing import Any, Callable, Optional, Union

from twisted.internet import defer

_Handler = Union[Callable[[int, Optional[types.FrameType]], Any], int, signal.Handlers, None]

#: The signals that stop a stream of payments, by name.
STOP_SIGNALS: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """Catches SIGINT and SIGTERM while installed (a context manager); ``reactor`` is woken
    through ``callFromThread``, the one reactor call a signal handler may make."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.signal: Optional[int] = None
        #: Fires (in the reactor) with the signal number when one arrives.
        self.asked: defer.Deferred[int] = defer.Deferred()
        self._previous: dict[int, _Handler] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return STOP_SIGNALS.get(self.signal, "a signal") if self.signal is not None else ""

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process it ended."""
        return 128 + (self.signal or 0)

    def __enter__(self) -> "StopRequest":
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # ignored by whoever started us (nohup, a background job): stays ignored
            self._previous[signum] = signal.signal(signum, self._caught)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _caught(self, signum: int, frame: Optional[types.FrameType]) -> None:
        if self.signal is None:
            self.signal = signum
            # A second signal takes the usual way (Ctrl-C twice: stop now).
            self._restore()
            self.reactor.callFromThread(self._fire, signum)

    def _fire(self, signum: int) -> None:
        if not self.asked.called:
            self.asked.callback(signum)
