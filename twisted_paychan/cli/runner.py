"""
Running one command on a reactor of its own.

Every command is an ``async`` function of a reactor. :func:`run` builds a fresh reactor
instance (not the process-global one), runs the command on it until it finishes, stops the
reactor and returns the command's result, or raises what it raised. A fresh reactor per run
means ``main()`` can be called any number of times in one process (tests do), even while
another reactor is running elsewhere, and never leaves a global reactor behind.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.selectreactor import SelectReactor
from twisted.python.failure import Failure

T = TypeVar("T")


def new_reactor() -> Any:
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return SelectReactor()
    return EPollReactor()


def run(command: Callable[[Any], Awaitable[T]], *, install_signal_handlers: bool = False) -> T:
    reactor = new_reactor()
    outcome: list[Any] = []

    def stop(_: object) -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already shutting down (a signal, or the command stopped it)

    def start() -> None:
        d: Deferred[T] = Deferred.fromCoroutine(_call(command, reactor))
        d.addBoth(outcome.append)
        d.addBoth(stop)

    reactor.callWhenRunning(start)
    try:
        reactor.run(installSignalHandlers=install_signal_handlers)
    finally:
        waker = getattr(reactor, "waker", None)
        if waker is not None:
            waker.connectionLost(None)  # its pipe would outlive the reactor otherwise
    if not outcome:
        raise RuntimeError("the reactor stopped before the command finished")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    value: T = result
    return value


async def _call(command: Callable[[Any], Awaitable[T]], reactor: Any) -> T:
    return await command(reactor)
