"""
Frames written in one burst leave a connection in one write.

Some moments produce many frames at once: a group commit's delivery (on the server, the
PAYMENT_ACK of every payment one sync made durable; on the client, the UPDATE_PAYMENTs whose c
it stored), or one read that carried several messages. Written one by one, each frame is a
``send`` system call and a TCP segment of its own; held until the burst is over, a connection's
frames are joined and written once. The bytes on the wire are the same, in the same order.

Whoever delivers a burst wraps it in :data:`burst` (``with burst: ...``; bursts nest, and only
the outermost one releases). A writer asks :func:`hold` whether it may hold its frames back: if
a burst is under way, its ``flush`` is called once when the burst ends, and it keeps appending
frames to its own buffer until then; if not, it writes at once, as before. Nothing is held
across turns of the reactor: a burst is one synchronous call.

This module knows nothing of sockets or stores, so that both the store (``store.sqlite``, which
delivers a group commit's results) and the connections (``net.tcp``) can use it. Everything here
runs in the reactor thread.
"""

from __future__ import annotations

from types import TracebackType
from typing import Callable, Final, Optional

from twisted.logger import Logger

__all__ = ["burst", "hold", "Burst"]

_log = Logger()


class Burst:
    """The burst under way, if any (one per process: every caller is in the reactor thread)."""

    __slots__ = ("depth", "flushes")

    def __init__(self) -> None:
        #: How many ``with burst`` blocks are open.
        self.depth = 0
        #: What to call when the outermost one ends, in the order the writers first held.
        self.flushes: list[Callable[[], None]] = []

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, kind: Optional[type[BaseException]], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.depth -= 1
        if self.depth == 0 and self.flushes:
            self.release()

    def release(self) -> None:
        """Let every held writer flush (a flush that raises is logged; the others still run)."""
        while self.flushes:
            flushes, self.flushes = self.flushes, []
            for flush in flushes:
                try:
                    flush()
                except Exception:
                    _log.failure("flushing frames held for a burst failed")


#: The process's burst: ``with burst: ...`` around a delivery.
burst: Final = Burst()


def hold(flush: Callable[[], None]) -> bool:
    """Whether a burst is under way; if it is, ``flush()`` is called when it ends (the caller
    asks once per burst, when it holds its first frame)."""
    if burst.depth == 0:
        return False
    burst.flushes.append(flush)
    return True
