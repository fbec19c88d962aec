"""
The PostgreSQL channel store: the same ``IChannelStore`` as memory and SQLite, on a database
several processes may share (issue #13, ``doc/cluster.md``: the cluster's statements, fencing
tokens, leases and key paths, run in the same batches through :meth:`PostgresChannelStore.submit`).

Durable: the session runs with ``synchronous_commit = on``, so a commit returns only once the
server flushed its WAL, and a Deferred fires only after the commit that holds its write.

Group commit: operations asked for during one reactor turn are collected and run, at the end of
the turn, in one transaction, and every Deferred of the batch fires after that one commit. A
refused write fails only its own Deferred without a savepoint (three round trips each): every
statement is written so that a refusal is not an SQL error (a WHERE that matches nothing, an
``INSERT ... ON CONFLICT DO NOTHING``), and is explained after it, having written nothing. An SQL
error is then the database's trouble, not a rule: it fails the whole batch, rolled back. While a batch is in
the database, later operations wait and go together into the next one: so the payments of
concurrent channels share a commit, and none is acknowledged before the commit that holds it.
Operations run in the order they were asked for, so a read sees every earlier write.

Why a thread and not psycopg's non-blocking mode under ``addReader``: psycopg 3's blocking
``Connection`` is the API it documents and tests most, its async API needs an asyncio loop (our
reactor is epoll), and driving libpq's non-blocking calls by hand from ``addReader`` would mean
re-implementing psycopg's protocol generators against private modules. A dedicated ThreadPool of
exactly one thread per store keeps the reactor free while the commit waits for the server's
fsync, and, being one thread, runs batches strictly in order (one in flight at a time), which is
what keeps the store's order of writes and acknowledgements. The hand-off costs some tens of
microseconds per batch (not per payment); the fsync on the server costs more.

The money rules are those of ``store.rules``: payments and prunes are ``UPDATE``/``DELETE``
statements whose WHERE is the rule (check and write in one statement, so two processes cannot
both pass a check and then both write), transitions one ``UPDATE ... WHERE state = expected``;
a refused statement is explained by the rule itself, as in the SQLite store.

The schema comes from the versioned SQL files in ``store/sql/postgres/`` (``NNNN_name.sql``),
applied in order, under an advisory lock, by the first process to open a database that lacks
them; ``schema_version`` records each one applied. A database newer than this program is
refused.

A lost connection fails the batch it was carrying (its writes may or may not have committed:
the Deferreds fail, so nothing is acknowledged) and the next batch connects again.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Callable, Collection, Optional, TypeVar, cast

import psycopg
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_paychan.bursts import burst
from twisted_paychan.daemon_threads import DaemonThreadPool
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)
from twisted_paychan.channel.states import IllegalTransition
from twisted_paychan.store import rules
from twisted_paychan.store.interfaces import DuplicateChannel, IChannelStore, ServerTotals, StoreError, check_page
from twisted_paychan.store.rules import (
    CLIENT_PAYABLE,
    SERVER_PAYABLE,
    SERVER_PRUNABLE,
    check_change,
    check_client_cas,
    check_payment,
    check_prune,
    check_server_cas,
)
from twisted_paychan.store.sqlite import (
    _CLIENT_COLUMNS,
    _SERVER_COLUMNS,
    _client_record,
    _client_row,
    _server_record,
    _server_row,
)

T = TypeVar("T")
_Conn = psycopg.Connection[tuple[Any, ...]]
_Op = Callable[[_Conn], Any]
#: What an operation came to: ``(True, result)`` or ``(False, exception)``.
_Result = tuple[bool, Any]

#: The advisory lock key taken while the schema is migrated ("paychan" in ASCII).
MIGRATION_LOCK = 0x70617963_68616E
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_PAYMENT_SQL = (
    "UPDATE server_channels SET best_value = %s, best_signature = %s "
    f"WHERE contract_txid = %s AND best_value <= %s AND state = '{SERVER_PAYABLE.value}'"
)
_CHANGE_SQL = (
    "UPDATE client_channels SET client_change = %s WHERE contract_txid = %s AND client_change >= %s "
    "AND state IN ({})".format(", ".join(sorted(f"'{s.value}'" for s in CLIENT_PAYABLE)))
)


def migrations() -> list[tuple[int, str, str]]:
    """The shipped schema files as ``(version, file name, SQL)``, in order."""
    found = []
    for entry in resources.files("twisted_paychan.store").joinpath("sql", "postgres").iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m is not None:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"the PostgreSQL schema files are not numbered 1..n: {versions}")
    return found


def migrate(conn: _Conn) -> int:
    """Bring the database's schema to this program's, in one transaction; the version it has."""
    known = migrations()
    with conn.transaction():
        # Two processes starting at once: the second waits here and then finds it done.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version").fetchall()}
        newest = max(applied, default=0)
        if newest > len(known):
            raise StoreError(f"the database's schema is version {newest}, newer than this program's "
                             f"({len(known)}): upgrade twisted-paychan")
        for version, name, sql in known:
            if version not in applied:
                conn.execute(cast(Any, sql))  # the file's text is a literal, several statements
                conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (version, name))
    return len(known)


class _Pending:
    __slots__ = ("op", "deferred")

    def __init__(self, op: _Op, deferred: defer.Deferred[Any]) -> None:
        self.op = op
        self.deferred = deferred


@implementer(IChannelStore)
class PostgresChannelStore:
    """See the module docstring. ``conninfo`` is a libpq connection string or URI
    (``postgresql://user@host/db``). The connection is made, and the schema migrated, in the
    store's thread before its first operation; ``ready`` fires when that is done (or fails with
    the reason). ``reactor`` must also provide ``IReactorFromThreads`` (every real reactor does).
    """

    log = Logger()

    def __init__(self, conninfo: str, reactor: IReactorTime, node_id: Optional[str] = None) -> None:
        self._conninfo = conninfo
        #: This process's name in a cluster (``cluster.node``): the session's ``paychan.node``,
        #: which a new channel's ``duty_node`` defaults to.
        self.node_id = node_id
        self._reactor = reactor
        self._threads = cast(IReactorFromThreads, reactor)
        self._pool = DaemonThreadPool(1, 1, name="paychan-postgres")  # see daemon_threads
        self._pool.start()
        self._conn: Optional[_Conn] = None
        self._batch: list[_Pending] = []
        self._flush_call: Optional[IDelayedCall] = None
        #: The batch in the database, if any: the next one waits for it.
        self._in_flight: Optional[defer.Deferred[None]] = None
        self._closing = False
        self._closed: Optional[defer.Deferred[None]] = None
        #: Commits made and writes they held: ``writes / commits`` shows how well batching works.
        self.commits = 0
        self.writes = 0
        self.ready: defer.Deferred[None] = self._submit(lambda conn: None, write=False)

    # -- the connection (store thread) ------------------------------------------------------

    def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            conn.execute("SET synchronous_commit = on")
            if self.node_id is not None:
                conn.execute("SELECT set_config('paychan.node', %s, false)", (self.node_id,))
            migrate(conn)
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL: {e}".strip()) from None
        self._conn = conn
        return conn

    def _run_batch(self, batch: list[_Op], writes: int) -> list[_Result]:
        """In the store's thread: one transaction, one commit. A refused operation wrote
        nothing (module docstring), so it needs no savepoint to be undone."""
        results: list[_Result] = []
        try:
            conn = self._connection()
            with conn.transaction():
                for op in batch:
                    try:
                        results.append((True, op(conn)))
                    except (StoreError, IllegalTransition, AssertionError) as e:
                        results.append((False, e))
        except psycopg.Error as e:
            error = StoreError(f"PostgreSQL: {e}".strip())
            return [(False, error)] * len(batch)
        except StoreError as e:
            return [(False, e)] * len(batch)
        if writes:
            self.commits += 1
            self.writes += writes
        return results

    # -- the batch (reactor thread) ---------------------------------------------------------

    def submit(self, op: Callable[[_Conn], T], write: bool = True) -> defer.Deferred[T]:
        """Run ``op(connection)`` in the store's thread, in the next batch (one transaction
        with the other operations of its turn, in the order asked): the seam through which the
        cluster's statements (``store.ownership``, ``net.duty``) share the store's commits."""
        return self._submit(op, write)

    def _submit(self, op: Callable[[_Conn], T], write: bool = True) -> defer.Deferred[T]:
        if self._closing:
            return defer.fail(StoreError("the store is closed"))
        d: defer.Deferred[T] = defer.Deferred()
        self._batch.append(_Pending(op, d))
        if self._flush_call is None and self._in_flight is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        """End of the reactor turn (or of the batch before): send what waits, as one batch."""
        self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch or self._in_flight is not None:
            self._batch[:0] = batch
            return
        ops = [p.op for p in batch]
        writes = len(ops)  # reads are cheap in a transaction: counting them too is harmless
        running = deferToThreadPool(self._threads, self._pool, self._run_batch, ops, writes)

        def done(results: list[_Result]) -> None:
            self._in_flight = None
            with burst:  # their acks leave each connection in one write (``twisted_paychan.bursts``)
                for p, (ok, value) in zip(batch, results):
                    if ok:
                        p.deferred.callback(value)
                    else:
                        p.deferred.errback(Failure(value))
            if self._batch:
                self._flush_call = self._reactor.callLater(0, self._flush)

        def crashed(f: Failure) -> None:
            # _run_batch catches what the database raises; this is a bug, but no Deferred of
            # the batch may be left waiting for ever.
            self.log.failure("PostgreSQL store batch", f)
            done([(False, StoreError(f"PostgreSQL store failed: {f.getErrorMessage()}"))] * len(batch))

        self._in_flight = running.addCallbacks(done, crashed)

    def _transition(self, table: str, columns: str, to_record: Callable[[tuple[Any, ...]], T],
                    contract_txid: bytes, expected: str, new: str, changes: dict[str, object],
                    check: Callable[[str], None]) -> defer.Deferred[T]:
        """As ``SqliteChannelStore._transition``: one UPDATE whose WHERE is the comparison;
        ``check(stored_state)`` judges the edge first and explains a refused UPDATE."""
        legal = rules.judged_legal(check, expected)
        update = f"{rules.cas_update(table, list(changes), '%s')} RETURNING {columns}"
        params = (new, *changes.values(), contract_txid, expected)

        def op(conn: _Conn) -> T:
            row = conn.execute(cast(Any, update), params).fetchone() if legal else None
            if row is None:
                found = conn.execute(cast(Any, f"SELECT state FROM {table} WHERE contract_txid = %s"),
                                     (contract_txid,)).fetchone()
                rules.explain_refused(contract_txid, found, lambda r: check(r[0]), "the UPDATE refused a transition")
            return to_record(row)

        return self._submit(op)

    # -- server side --------------------------------------------------------------------------

    def add_server_channel(self, record: ServerChannelRecord) -> defer.Deferred[None]:
        def op(conn: _Conn) -> None:
            if conn.execute(cast(Any, f"INSERT INTO server_channels ({_SERVER_COLUMNS}) VALUES ("
                                    + ", ".join(["%s"] * 15) + ") ON CONFLICT (contract_txid) DO NOTHING"),
                            _server_row(record)).rowcount != 1:
                raise DuplicateChannel(record.contract_txid.hex())

        return self._submit(op)

    def record_payment(self, contract_txid: bytes, best_value: int, signature: bytes) -> defer.Deferred[None]:
        def op(conn: _Conn) -> None:
            if conn.execute(_PAYMENT_SQL, (best_value, signature, contract_txid, best_value)).rowcount != 1:
                row = conn.execute("SELECT best_value, state FROM server_channels WHERE contract_txid = %s",
                                   (contract_txid,)).fetchone()
                rules.explain_refused(contract_txid, row, lambda r: check_payment(contract_txid, r[1], r[0], best_value),
                                      "the UPDATE refused a payment")

        return self._submit(op)

    def transition_server(self, contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                          /, **changes: object) -> defer.Deferred[ServerChannelRecord]:
        def check(stored: str) -> None:
            check_server_cas(contract_txid, ServerChannelState(stored), expected, new, changes)

        return self._transition("server_channels", _SERVER_COLUMNS, _server_record, contract_txid,
                                expected.value, new.value, changes, check)

    def prune_server_channel(self, contract_txid: bytes, best_value: int) -> defer.Deferred[None]:
        def op(conn: _Conn) -> None:
            cur = conn.execute(
                "DELETE FROM server_channels WHERE contract_txid = %s AND state = %s "
                "AND settlement_tx IS NULL AND best_value = %s", (contract_txid, SERVER_PRUNABLE.value, best_value))
            if cur.rowcount != 1:
                row = conn.execute("SELECT state, settlement_tx, best_value FROM server_channels "
                                   "WHERE contract_txid = %s", (contract_txid,)).fetchone()
                rules.explain_refused(contract_txid, row,
                                      lambda r: check_prune(contract_txid, r[0], r[1], r[2], best_value),
                                      "the DELETE refused a prune")

        return self._submit(op)

    def server_channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ServerChannelRecord]]:
        def op(conn: _Conn) -> Optional[ServerChannelRecord]:
            row = conn.execute(cast(Any, f"SELECT {_SERVER_COLUMNS} FROM server_channels WHERE contract_txid = %s"),
                               (contract_txid,)).fetchone()
            return None if row is None else _server_record(row)

        return self._submit(op, write=False)

    def server_channels(
        self, states: Optional[Collection[ServerChannelState]] = None, limit: Optional[int] = None, offset: int = 0
    ) -> defer.Deferred[list[ServerChannelRecord]]:
        check_page(limit, offset)
        sql, args = rules.server_listing(_SERVER_COLUMNS, "%s", states, limit, offset)

        def op(conn: _Conn) -> list[ServerChannelRecord]:
            return [_server_record(r) for r in conn.execute(cast(Any, sql), args).fetchall()]

        return self._submit(op, write=False)

    def server_totals(self) -> defer.Deferred[ServerTotals]:
        def op(conn: _Conn) -> ServerTotals:
            (next_expiry,) = cast(tuple[Any], conn.execute(cast(Any, rules.NEXT_OPEN_EXPIRY_SQL)).fetchone())
            return rules.server_totals(conn.execute(cast(Any, rules.SERVER_TOTALS_SQL)).fetchall(), next_expiry)

        return self._submit(op, write=False)

    # -- client side --------------------------------------------------------------------------

    def add_client_channel(self, record: ClientChannelRecord) -> defer.Deferred[None]:
        def op(conn: _Conn) -> None:
            if conn.execute(cast(Any, f"INSERT INTO client_channels ({_CLIENT_COLUMNS}) VALUES ("
                                    + ", ".join(["%s"] * 16) + ") ON CONFLICT (contract_txid) DO NOTHING"),
                            _client_row(record)).rowcount != 1:
                raise DuplicateChannel(record.contract_txid.hex())

        return self._submit(op)

    def record_client_change(self, contract_txid: bytes, client_change: int) -> defer.Deferred[None]:
        def op(conn: _Conn) -> None:
            if conn.execute(cast(Any, _CHANGE_SQL), (client_change, contract_txid, client_change)).rowcount != 1:
                row = conn.execute("SELECT client_change, state FROM client_channels WHERE contract_txid = %s",
                                   (contract_txid,)).fetchone()
                rules.explain_refused(contract_txid, row, lambda r: check_change(contract_txid, r[1], r[0], client_change),
                                      "the UPDATE refused a change")

        return self._submit(op)

    def transition_client(self, contract_txid: bytes, expected: ClientChannelState, new: ClientChannelState,
                          /, **changes: object) -> defer.Deferred[ClientChannelRecord]:
        def check(stored: str) -> None:
            check_client_cas(contract_txid, ClientChannelState(stored), expected, new, changes)

        return self._transition("client_channels", _CLIENT_COLUMNS, _client_record, contract_txid,
                                expected.value, new.value, changes, check)

    def client_channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ClientChannelRecord]]:
        def op(conn: _Conn) -> Optional[ClientChannelRecord]:
            row = conn.execute(cast(Any, f"SELECT {_CLIENT_COLUMNS} FROM client_channels WHERE contract_txid = %s"),
                               (contract_txid,)).fetchone()
            return None if row is None else _client_record(row)

        return self._submit(op, write=False)

    def client_channels(self, state: Optional[ClientChannelState] = None) -> defer.Deferred[list[ClientChannelRecord]]:
        def op(conn: _Conn) -> list[ClientChannelRecord]:
            if state is None:
                rows = conn.execute(cast(Any, f"SELECT {_CLIENT_COLUMNS} FROM client_channels ORDER BY seq")).fetchall()
            else:
                rows = conn.execute(cast(Any, f"SELECT {_CLIENT_COLUMNS} FROM client_channels WHERE state = %s "
                                              "ORDER BY seq"), (state.value,)).fetchall()
            return [_client_record(r) for r in rows]

        return self._submit(op, write=False)

    # -- shutting down ------------------------------------------------------------------------

    def close(self) -> defer.Deferred[None]:
        """Carry out what is queued, then close the connection and stop the store's thread."""
        if self._closed is not None:
            return self._closed
        self._closed = defer.ensureDeferred(self._close())
        return self._closed

    async def _close(self) -> None:
        while self._batch or self._in_flight is not None or self._flush_call is not None:
            if self._flush_call is not None:
                self._flush_call.cancel()
                self._flush_call = None
            if self._in_flight is None:
                self._flush()
            if self._in_flight is not None:
                await self._in_flight
        self._closing = True

        def disconnect() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await deferToThreadPool(self._threads, self._pool, disconnect)
        finally:
            self._pool.stop()
