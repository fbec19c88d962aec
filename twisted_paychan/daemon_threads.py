"""A one-purpose thread pool whose threads do not keep the process alive.

The PostgreSQL store and the wallet's key commits each run blocking database work in a thread
of their own. A start refused after they were opened (a busy ``--listen``) raises before the
reactor runs, so nothing closes them, and a plain thread would make the process wait for ever.
A normal stop closes them (and joins the thread) before the reactor stops; a write cut short by
an exit was never acknowledged (its Deferred had not fired), and the database's transaction
makes it all or nothing."""

from __future__ import annotations

import threading
from typing import Any

from twisted.python.threadpool import ThreadPool


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class DaemonThreadPool(ThreadPool):
    threadFactory = _DaemonThread
