"""
The channel keys a server keeps, committed to the wallet's SQLite file by a thread of their own,
the keys kept during one turn of the reactor in one transaction.

Why: every channel a server opens stores its provisional key (``keep_channel_key``) before the
channel record that names it, and a SQLite commit with ``synchronous=FULL`` waits for an fsync.
In the reactor thread that wait stopped every connection, one open at a time: with many clients
opening at once, a handshake could wait seconds behind other channels' key commits (issue #12,
the liveness probe of ``bench/bench_many.py``). Here the wait happens in one worker thread, and
what the reactor sees is a Deferred that fires once the key is on disk; the keys asked for while
a commit runs go together into the next one.

Nothing is weaker: the caller (``ServerChannelManager``) stores the channel record only once
that Deferred has fired, so no channel ever names a key that a crash could take back; a key whose
commit failed is not kept, and the channel is not stored.

The thread has its own SQLite connection to the wallet's file (WAL mode: it and the reactor
thread's connection each take the write lock in turn, waiting up to ``busy_timeout``). One
thread, one commit at a time, in the order asked.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted_paychan.daemon_threads import DaemonThreadPool

from twisted_paychan.wallet.errors import WalletError

__all__ = ["KeyCommits", "KeyRow", "INSERT_KEY"]

#: A row of the wallet's ``keys`` table: public key, purpose, script type, secret (sealed when
#: the wallet is encrypted), derivation path, label.
KeyRow = tuple[bytes, str, Optional[str], bytes, Optional[str], Optional[bytes]]

INSERT_KEY = ("INSERT INTO keys (public_key, purpose, script_type, secret, path, label) "
              "VALUES (?, ?, ?, ?, ?, ?)")

#: How long the thread's connection waits for the reactor thread's write lock (ms).
_BUSY_TIMEOUT_MS = 30_000


class KeyCommits:
    """Group commit of key rows into the wallet file at ``path``, in a thread; see the module
    docstring. ``reactor`` provides IReactorTime and IReactorFromThreads."""

    log = Logger()

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor
        self._pool = DaemonThreadPool(1, 1, name="paychan-wallet-keys")  # see daemon_threads
        self._pool.start()
        self._db: Optional[sqlite3.Connection] = None
        self._batch: list[tuple[KeyRow, defer.Deferred[None]]] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._in_flight = False
        self._closed = False
        #: Commits made and rows written (tests and benchmarks read them).
        self.commits = 0
        self.rows = 0

    def keep(self, row: KeyRow) -> defer.Deferred[None]:
        """Commit ``row``; the Deferred fires (in the reactor thread) once it is durable."""
        if self._closed:
            return defer.fail(WalletError("the wallet is closed"))
        d: defer.Deferred[None] = defer.Deferred()
        self._batch.append((row, d))
        if self._flush_call is None and not self._in_flight:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        self._in_flight = True
        running: defer.Deferred[None] = deferToThreadPool(self._reactor, self._pool, self._write, [r for r, _ in batch])

        def done(result: Optional[Failure]) -> None:
            self._in_flight = False
            if result is None:
                self.commits += 1
                self.rows += len(batch)
            else:
                self.log.failure("wallet: committing {count} channel keys failed", result, count=len(batch))
                result = Failure(WalletError(f"storing the channel key failed: {result.getErrorMessage()}"))
            for _, d in batch:
                if result is None:
                    d.callback(None)
                else:
                    d.errback(result)
            if self._batch and not self._closed:
                self._flush_call = self._reactor.callLater(0, self._flush)

        running.addBoth(done)

    def _write(self, rows: list[KeyRow]) -> None:
        """In the thread: one transaction for ``rows``, durable when it returns."""
        db = self._db
        if db is None:
            db = self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA secure_delete = ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(INSERT_KEY, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Wait for the commit under way, write what is still queued (in the calling thread),
        and stop the thread. Their Deferreds fire before this returns."""
        if self._closed:
            return
        self._closed = True
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        self._pool.stop()  # joins the thread: a commit under way completes first
        batch, self._batch = self._batch, []
        try:
            if batch:
                try:
                    self._write([r for r, _ in batch])
                except Exception:
                    failure = Failure()
                    for _, d in batch:
                        d.errback(failure)
                else:
                    for _, d in batch:
                        d.callback(None)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
