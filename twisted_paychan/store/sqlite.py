"""
The SQLite channel store: durable (WAL, ``synchronous=FULL``), one process at a time, and fast
under load through group commit and the payment log.

Group commit per reactor turn: every operation asked for during one turn of the reactor (one
``epoll`` round: all the frames that arrived together, on every connection) waits until the end of
that turn and is made durable by one sync, and the Deferreds fire after it. So nothing is
acknowledged before it is durable, no write waits for a later one, and with many channels paying
at once one sync covers them all. The sync runs in the reactor thread: handing it to a thread and
back cost ~130 µs per commit (GIL hand-offs and the waker pipe), more than the sync itself.

Payments (``record_payment``, ``record_client_change``) go to the payment log (``paylog``): one
write and one ``fdatasync``, cheaper than a SQLite commit. What the log holds and SQLite does not
yet is kept in memory (the *overlay*); reads see it, and the next SQLite transaction absorbs it
(a *checkpoint*: the overlay is written to the tables together with the log's generation, in one
commit), after which the log starts again. Opening the store replays the log and checkpoints.

Each SQLite write runs inside its own SAVEPOINT, so one failing write (an unknown channel, a
duplicate, a lost compare-and-set) fails only its own Deferred. Operations run in the order they
were asked for, so a read sees every earlier write.

A state change (``transition_server``/``transition_client``) is a SQLite write: its transaction
absorbs the log first, then one ``UPDATE ... WHERE state = expected`` both checks and writes, so
the record it returns holds every payment acknowledged before it, and of two transitions that
expected the same state the second changes nothing and fails with ``TransitionConflict``.

Without a reactor every operation is carried out at once, one commit each: for tests driven by
``task.Clock`` and for command-line tools.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from typing import Any, Callable, Collection, Optional, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_paychan.bursts import burst
from twisted_paychan.store import paylog, rules
from twisted_paychan.channel.record_copy import replace_fields
from twisted_paychan.store.interfaces import (
    DuplicateChannel,
    IChannelStore,
    ServerTotals,
    StoreError,
    UnknownChannel,
    check_page,
)
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
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]
#: A payment for the log: ``(kind, contract_txid, value, signature)``.
_Slot = tuple[int, bytes, int, bytes]
#: A Deferred and what to fire it with (a result, or a Failure to errback).
_Outcome = tuple["defer.Deferred[Any]", Any]
#: ``Failure()`` (the exception being handled) or ``Failure(exc)``, typed: Twisted's
#: constructor is not annotated.
_failure: Callable[..., Failure] = Failure

_SCHEMA = """
CREATE TABLE IF NOT EXISTS server_channels (
    contract_txid   BLOB PRIMARY KEY,
    version         INTEGER NOT NULL,
    contract        BLOB NOT NULL,
    value           INTEGER NOT NULL,
    expiry          INTEGER NOT NULL,
    server_key      BLOB NOT NULL,
    client_key      BLOB NOT NULL,
    best_value      INTEGER NOT NULL,
    best_signature  BLOB,
    client_output   BLOB,
    state           TEXT NOT NULL,
    settlement_tx   BLOB,
    note            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    seq             INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_channels (
    contract_txid   BLOB PRIMARY KEY,
    server_id       BLOB NOT NULL,
    version         INTEGER NOT NULL,
    contract        BLOB NOT NULL,
    refund          BLOB NOT NULL,
    client_key      BLOB NOT NULL,
    server_key      BLOB NOT NULL,
    value           INTEGER NOT NULL,
    client_change   INTEGER NOT NULL,
    expiry          INTEGER NOT NULL,
    refund_fees     INTEGER NOT NULL,
    state           TEXT NOT NULL,
    close_tx        BLOB,
    note            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    seq             INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS client_channels_server ON client_channels (server_id);
CREATE INDEX IF NOT EXISTS server_channels_seq ON server_channels (seq);
CREATE INDEX IF NOT EXISTS server_channels_state ON server_channels (state, seq);
CREATE INDEX IF NOT EXISTS client_channels_seq ON client_channels (seq);
CREATE INDEX IF NOT EXISTS client_channels_state ON client_channels (state, seq);
CREATE TABLE IF NOT EXISTS meta (
    key             TEXT PRIMARY KEY,
    value           INTEGER NOT NULL
);
"""

#: The payments as UPDATEs whose WHERE is the rule of ``store.rules`` (so the check and the
#: write are one statement); a refused one is explained by the rule itself.
_PAYMENT_SQL = (
    "UPDATE server_channels SET best_value = ?, best_signature = ? "
    f"WHERE contract_txid = ? AND best_value <= ? AND state = '{SERVER_PAYABLE.value}'"
)
_CHANGE_SQL = (
    "UPDATE client_channels SET client_change = ? WHERE contract_txid = ? AND client_change >= ? "
    "AND state IN ({})".format(", ".join(sorted(f"'{s.value}'" for s in CLIENT_PAYABLE)))
)

_SERVER_COLUMNS = (
    "contract_txid, version, contract, value, expiry, server_key, client_key, best_value, "
    "best_signature, client_output, state, settlement_tx, note, created_at, updated_at"
)
_CLIENT_COLUMNS = (
    "contract_txid, server_id, version, contract, refund, client_key, server_key, value, "
    "client_change, expiry, refund_fees, state, close_tx, note, created_at, updated_at"
)


class StoreLocked(StoreError):
    """Another process has this store open."""


def _server_row(r: ServerChannelRecord) -> tuple[object, ...]:
    return (
        r.contract_txid, r.version, r.contract, r.value, r.expiry, r.server_key, r.client_key,
        r.best_value, r.best_signature, r.client_output, r.state.value, r.settlement_tx, r.note,
        r.created_at, r.updated_at,
    )


def _server_record(row: tuple[Any, ...]) -> ServerChannelRecord:
    (txid, version, contract, value, expiry, skey, ckey, best, sig, cout, state, settle, note,
     created, updated) = row
    return ServerChannelRecord(
        contract_txid=bytes(txid), version=version, contract=bytes(contract), value=value,
        expiry=expiry, server_key=bytes(skey), client_key=bytes(ckey), best_value=best,
        best_signature=None if sig is None else bytes(sig),
        client_output=None if cout is None else bytes(cout),
        state=ServerChannelState(state), settlement_tx=None if settle is None else bytes(settle),
        note=note, created_at=created, updated_at=updated,
    )


def _client_row(r: ClientChannelRecord) -> tuple[object, ...]:
    return (
        r.contract_txid, r.server_id, r.version, r.contract, r.refund, r.client_key, r.server_key,
        r.value, r.client_change, r.expiry, r.refund_fees, r.state.value, r.close_tx, r.note,
        r.created_at, r.updated_at,
    )


def _client_record(row: tuple[Any, ...]) -> ClientChannelRecord:
    (txid, sid, version, contract, refund, ckey, skey, value, change, expiry, fees, state, close,
     note, created, updated) = row
    return ClientChannelRecord(
        contract_txid=bytes(txid), server_id=bytes(sid), version=version, contract=bytes(contract),
        refund=bytes(refund), client_key=bytes(ckey), server_key=bytes(skey), value=value,
        client_change=change, expiry=expiry, refund_fees=fees, state=ClientChannelState(state),
        close_tx=None if close is None else bytes(close), note=note, created_at=created,
        updated_at=updated,
    )


class _Pending:
    """One operation waiting for the end of the reactor turn."""

    __slots__ = ("op", "write", "deferred", "slot")

    def __init__(self, op: _Op, write: bool, deferred: defer.Deferred[Any], slot: Optional[_Slot] = None) -> None:
        #: What to do inside a SQLite transaction (every operation has one).
        self.op = op
        self.write = write
        self.deferred = deferred
        #: For payments: ``(kind, contract_txid, value, signature)``, to go to the log instead.
        self.slot = slot


@implementer(IChannelStore)
class SqliteChannelStore:
    """See the module docstring. With ``reactor``, operations are batched per reactor turn;
    without, each is carried out at once."""

    log = Logger()

    def __init__(self, path: str, reactor: Optional[IReactorTime] = None, log_slots: int = paylog.DEFAULT_SLOTS) -> None:
        self.path = path
        self._lock_file = open(path + ".lock", "a+")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreLocked(f"channel store {path} is in use by another process") from None
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._reactor = reactor
        self._batch: list[_Pending] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._closing = False
        #: Set when a sync failed: what is on disk is then unknown, so nothing more is accepted.
        self._broken: Optional[str] = None
        #: Number of syncs made; with ``writes`` it shows how well group commit batches.
        self.commits = 0
        self.writes = 0
        #: Called with the seconds each durable batch (write and sync) took; for ``/metrics``.
        self.sync_observer: Optional[Callable[[float], None]] = None
        #: Payments in the log and not yet in the tables: (kind, txid) -> (value, signature).
        self._overlay: dict[tuple[int, bytes], tuple[int, bytes]] = {}
        #: What the tables say of channels payments were logged for: (kind, txid) -> state or
        #: None, and the stored value. Dropped whenever a SQLite write commits.
        self._table_cache: dict[tuple[int, bytes], tuple[Optional[str], int]] = {}
        self._paylog = paylog.PaymentLog(path + "-paylog", log_slots)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'paylog_generation'").fetchone()
        self._generation = (0 if row is None else row[0]) + 1
        for rec in self._paylog.open(self._generation):
            self._overlay[(rec.kind, rec.contract_txid)] = (rec.value, rec.signature)
        self._checkpoint()
        self._paylog.prepare()

    # -- the batch ----------------------------------------------------------------------------

    def _submit(self, op: Callable[[sqlite3.Connection], T], write: bool,
                slot: Optional[_Slot] = None) -> defer.Deferred[T]:
        if self._closing:
            return defer.fail(StoreError("the store is closed"))
        if self._broken is not None:
            return defer.fail(StoreError(f"the store failed to sync earlier: {self._broken}"))
        d: defer.Deferred[T] = defer.Deferred()
        pending = _Pending(op, write, d, slot)
        if self._reactor is None:
            self._deliver(self._run_batch([pending]))
            return d
        self._batch.append(pending)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        """End of the reactor turn: make the batch durable, then fire its Deferreds."""
        self._flush_call = None
        batch, self._batch = self._batch, []
        if batch:
            observe = self.sync_observer
            if observe is None:
                self._deliver(self._run_batch(batch))
                return
            commits, started = self.commits, time.perf_counter()
            outcomes = self._run_batch(batch)
            if self.commits != commits:
                observe(time.perf_counter() - started)
            self._deliver(outcomes)

    def _run_batch(self, batch: list[_Pending]) -> list[_Outcome]:
        logged = sum(1 for p in batch if p.slot is not None)
        if logged == len([p for p in batch if p.write]) and self._paylog.room(logged):
            return self._run_logged(batch)
        return self._run_sql(batch)

    def _run_logged(self, batch: list[_Pending]) -> list[_Outcome]:
        """A batch of payments and reads only: payments go to the log, one sync for all."""
        outcomes: list[_Outcome] = []
        slots: list[bytes] = []
        overlay = self._overlay
        changes: list[tuple[tuple[int, bytes], Optional[tuple[int, bytes]]]] = []
        #: Where each channel's slot is in ``slots``: pipelined payments of one channel in one
        #: batch write only the newest (recovery keeps the last of each channel anyway).
        written: dict[tuple[int, bytes], int] = {}
        for p in batch:
            if p.slot is None:
                try:
                    outcomes.append((p.deferred, p.op(self._db)))
                except Exception:
                    outcomes.append((p.deferred, _failure()))
                continue
            kind, txid, value, signature = p.slot
            try:
                self._check_logged(kind, txid, value)
            except StoreError:
                outcomes.append((p.deferred, _failure()))
                continue
            key = (kind, txid)
            changes.append((key, overlay.get(key)))
            overlay[key] = (value, signature)
            slot = paylog.encode_slot(self._generation, kind, txid, value, signature)
            at = written.get(key)
            if at is None:
                written[key] = len(slots)
                slots.append(slot)
            else:
                slots[at] = slot
            outcomes.append((p.deferred, None))
        if slots:
            try:
                self._paylog.append(slots)
            except OSError as e:
                # fsync failed: the page cache may no longer tell what is on disk. Undo what the
                # batch changed in memory, fail it, and take no more writes (operator action).
                for key, before in reversed(changes):
                    if before is None:
                        overlay.pop(key, None)
                    else:
                        overlay[key] = before
                self._broken = str(e)
                self.log.error("channel store: payment log sync failed: {error}", error=str(e))
                failure = _failure(StoreError(f"payment log sync failed: {e}"))
                return [(d, failure) for d, _ in outcomes]
            self.commits += 1
            self.writes += len(slots)
        return outcomes

    def _check_logged(self, kind: int, txid: bytes, value: int) -> None:
        """The checks ``record_payment``/``record_client_change`` make in SQL, for the log."""
        key = (kind, txid)
        cached = self._table_cache.get(key)
        if cached is None:
            if kind == paylog.SERVER_PAYMENT:
                row = self._db.execute(
                    "SELECT state, best_value FROM server_channels WHERE contract_txid = ?", (txid,)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT state, client_change FROM client_channels WHERE contract_txid = ?", (txid,)
                ).fetchone()
            if row is None:
                raise UnknownChannel(txid.hex())
            cached = self._table_cache[key] = (row[0], row[1])
        state, stored = cached
        logged = self._overlay.get(key)
        current = stored if logged is None else logged[0]
        if kind == paylog.SERVER_PAYMENT:
            check_payment(txid, str(state), current, value)
        else:
            check_change(txid, str(state), current, value)

    def _run_sql(self, batch: list[_Pending]) -> list[_Outcome]:
        """Run ``batch`` in one SQLite transaction that also absorbs the log (checkpoint)."""
        outcomes: list[_Outcome] = []
        db = self._db
        writes = sum(1 for p in batch if p.write)
        overlay, self._overlay = self._overlay, {}
        self._table_cache.clear()
        try:
            db.execute("BEGIN IMMEDIATE" if writes or overlay else "BEGIN")
            self._absorb(overlay)
            for i, p in enumerate(batch):
                db.execute(f"SAVEPOINT op{i}")
                try:
                    result = p.op(db)
                except Exception:
                    db.execute(f"ROLLBACK TO op{i}")
                    outcomes.append((p.deferred, _failure()))
                else:
                    outcomes.append((p.deferred, result))
                db.execute(f"RELEASE op{i}")
            db.execute("COMMIT")
        except Exception:
            failure = _failure()
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._overlay = overlay  # still in the log, still to be absorbed
            self.log.failure("channel store commit failed", failure)
            return [(p.deferred, _failure(StoreError(f"commit failed: {failure.getErrorMessage()}"))) for p in batch]
        if overlay:
            self._log_absorbed()
        if writes or overlay:
            self.commits += 1
            self.writes += writes
        return outcomes

    def _absorb(self, overlay: dict[tuple[int, bytes], tuple[int, bytes]]) -> None:
        """Write the log's payments into the tables (inside the caller's transaction), with the
        generation they belong to, so that recovery will not replay them again."""
        if not overlay:
            return
        db = self._db
        for (kind, txid), (value, signature) in overlay.items():
            if kind == paylog.SERVER_PAYMENT:
                db.execute(
                    "UPDATE server_channels SET best_value = ?, best_signature = ? "
                    "WHERE contract_txid = ? AND best_value <= ?",
                    (value, signature, txid, value),
                )
            else:
                db.execute(
                    "UPDATE client_channels SET client_change = ? WHERE contract_txid = ? AND client_change >= ?",
                    (value, txid, value),
                )
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('paylog_generation', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self._generation,),
        )

    def _log_absorbed(self) -> None:
        """The tables hold the log's generation: the log starts again, with the next one."""
        self._generation += 1
        self._paylog.restart()

    def _checkpoint(self) -> None:
        """Absorb the log now (at open and close)."""
        if not self._overlay:
            return
        overlay = self._overlay
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._absorb(overlay)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._overlay = {}
        self._table_cache.clear()
        self._log_absorbed()

    @staticmethod
    def _deliver(outcomes: list[_Outcome]) -> None:
        # One burst: the frames these completions send (acks, updates) leave each connection
        # in one write (``twisted_paychan.bursts``).
        with burst:
            for d, outcome in outcomes:
                if isinstance(outcome, Failure):
                    d.errback(outcome)
                else:
                    d.callback(outcome)

    def _server_logged(self, record: ServerChannelRecord) -> ServerChannelRecord:
        """A record read from the tables, with what the log holds for it."""
        logged = self._overlay.get((paylog.SERVER_PAYMENT, record.contract_txid))
        if logged is None:
            return record
        return replace_fields(record, best_value=logged[0], best_signature=logged[1])

    def _client_logged(self, record: ClientChannelRecord) -> ClientChannelRecord:
        logged = self._overlay.get((paylog.CLIENT_CHANGE, record.contract_txid))
        if logged is None:
            return record
        return replace_fields(record, client_change=logged[0])

    def _transition(self, table: str, columns: str, to_record: Callable[[tuple[Any, ...]], T],
                    contract_txid: bytes, expected: str, new: str, changes: dict[str, object],
                    check: Callable[[str], None]) -> defer.Deferred[T]:
        """A transition's write, inside the batch's transaction (which absorbed the payment log
        first, so the row holds every logged payment and keeps it): one UPDATE whose WHERE is
        the comparison, so the check and the write cannot be split. ``check(stored_state)`` is
        the rule of ``store.rules``: it explains a refused UPDATE, and it judges the edge
        beforehand (as if the stored state were the expected one), so that an illegal one is
        reported only after the stored state was compared (a conflict is reported first)."""
        legal = rules.judged_legal(check, expected)
        update = rules.cas_update(table, list(changes), "?")
        params = (new, *changes.values(), contract_txid, expected)

        def op(db: sqlite3.Connection) -> T:
            if not legal or db.execute(update, params).rowcount != 1:
                row = db.execute(f"SELECT state FROM {table} WHERE contract_txid = ?", (contract_txid,)).fetchone()
                rules.explain_refused(contract_txid, row, lambda r: check(r[0]), "the UPDATE refused a transition")
            return to_record(db.execute(f"SELECT {columns} FROM {table} WHERE contract_txid = ?",
                                        (contract_txid,)).fetchone())

        return self._submit(op, True)

    # -- server side --------------------------------------------------------------------------

    def add_server_channel(self, record: ServerChannelRecord) -> defer.Deferred[None]:
        def op(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO server_channels ({_SERVER_COLUMNS}, seq) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM server_channels))",
                    _server_row(record),
                )
            except sqlite3.IntegrityError:
                raise DuplicateChannel(record.contract_txid.hex()) from None

        return self._submit(op, True)

    def record_payment(self, contract_txid: bytes, best_value: int, signature: bytes) -> defer.Deferred[None]:
        def op(db: sqlite3.Connection) -> None:
            cur = db.execute(_PAYMENT_SQL, (best_value, signature, contract_txid, best_value))
            if cur.rowcount != 1:
                row = db.execute(
                    "SELECT best_value, state FROM server_channels WHERE contract_txid = ?", (contract_txid,)
                ).fetchone()
                rules.explain_refused(contract_txid, row, lambda r: check_payment(contract_txid, r[1], r[0], best_value),
                                      "the UPDATE refused a payment")

        slot = (paylog.SERVER_PAYMENT, contract_txid, best_value, signature) if len(signature) <= paylog.MAX_SIGNATURE else None
        return self._submit(op, True, slot)

    def transition_server(self, contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                          /, **changes: object) -> defer.Deferred[ServerChannelRecord]:
        def check(stored: str) -> None:
            check_server_cas(contract_txid, ServerChannelState(stored), expected, new, changes)

        return self._transition("server_channels", _SERVER_COLUMNS, _server_record, contract_txid,
                                expected.value, new.value, changes, check)

    def prune_server_channel(self, contract_txid: bytes, best_value: int) -> defer.Deferred[None]:
        # Inside the batch's transaction, after the payment log was absorbed: the row's b is
        # every payment's. One DELETE whose WHERE is the rule, as record_payment's UPDATE.
        def op(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "DELETE FROM server_channels WHERE contract_txid = ? AND state = ? AND settlement_tx IS NULL "
                "AND best_value = ?", (contract_txid, SERVER_PRUNABLE.value, best_value))
            if cur.rowcount != 1:
                row = db.execute("SELECT state, settlement_tx, best_value FROM server_channels "
                                 "WHERE contract_txid = ?", (contract_txid,)).fetchone()
                rules.explain_refused(contract_txid, row,
                                      lambda r: check_prune(contract_txid, r[0], r[1], r[2], best_value),
                                      "the DELETE refused a prune")
            self._table_cache.pop((paylog.SERVER_PAYMENT, contract_txid), None)

        return self._submit(op, True)

    def server_channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ServerChannelRecord]]:
        def op(db: sqlite3.Connection) -> Optional[ServerChannelRecord]:
            row = db.execute(
                f"SELECT {_SERVER_COLUMNS} FROM server_channels WHERE contract_txid = ?", (contract_txid,)
            ).fetchone()
            return None if row is None else self._server_logged(_server_record(row))

        return self._submit(op, False)

    def server_channels(
        self, states: Optional[Collection[ServerChannelState]] = None, limit: Optional[int] = None, offset: int = 0
    ) -> defer.Deferred[list[ServerChannelRecord]]:
        check_page(limit, offset)
        sql, args = rules.server_listing(_SERVER_COLUMNS, "?", states, limit, offset)

        def op(db: sqlite3.Connection) -> list[ServerChannelRecord]:
            return [self._server_logged(_server_record(r)) for r in db.execute(sql, args).fetchall()]

        return self._submit(op, False)

    def server_totals(self) -> defer.Deferred[ServerTotals]:
        def op(db: sqlite3.Connection) -> ServerTotals:
            totals = rules.server_totals(db.execute(rules.SERVER_TOTALS_SQL).fetchall(),
                                         db.execute(rules.NEXT_OPEN_EXPIRY_SQL).fetchone()[0])
            # Payments still in the log, not yet in the table's b: what they add to it.
            logged = {txid: value for (kind, txid), (value, _) in self._overlay.items()
                      if kind == paylog.SERVER_PAYMENT}
            if not logged:
                return totals
            txids = list(logged)
            added = 0
            for i in range(0, len(txids), 500):
                chunk = txids[i:i + 500]
                rows = db.execute("SELECT contract_txid, best_value FROM server_channels WHERE contract_txid IN ("
                                  + ",".join("?" * len(chunk)) + ")", chunk).fetchall()
                added += sum(logged[bytes(txid)] - value for txid, value in rows)
            return replace_fields(totals, paid_to_us=totals.paid_to_us + added)

        return self._submit(op, False)

    # -- client side --------------------------------------------------------------------------

    def add_client_channel(self, record: ClientChannelRecord) -> defer.Deferred[None]:
        def op(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO client_channels ({_CLIENT_COLUMNS}, seq) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM client_channels))",
                    _client_row(record),
                )
            except sqlite3.IntegrityError:
                raise DuplicateChannel(record.contract_txid.hex()) from None

        return self._submit(op, True)

    def record_client_change(self, contract_txid: bytes, client_change: int) -> defer.Deferred[None]:
        def op(db: sqlite3.Connection) -> None:
            cur = db.execute(_CHANGE_SQL, (client_change, contract_txid, client_change))
            if cur.rowcount != 1:
                row = db.execute(
                    "SELECT client_change, state FROM client_channels WHERE contract_txid = ?", (contract_txid,)
                ).fetchone()
                rules.explain_refused(contract_txid, row, lambda r: check_change(contract_txid, r[1], r[0], client_change),
                                      "the UPDATE refused a change")

        return self._submit(op, True, (paylog.CLIENT_CHANGE, contract_txid, client_change, b""))

    def transition_client(self, contract_txid: bytes, expected: ClientChannelState, new: ClientChannelState,
                          /, **changes: object) -> defer.Deferred[ClientChannelRecord]:
        def check(stored: str) -> None:
            check_client_cas(contract_txid, ClientChannelState(stored), expected, new, changes)

        return self._transition("client_channels", _CLIENT_COLUMNS, _client_record, contract_txid,
                                expected.value, new.value, changes, check)

    def client_channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ClientChannelRecord]]:
        def op(db: sqlite3.Connection) -> Optional[ClientChannelRecord]:
            row = db.execute(
                f"SELECT {_CLIENT_COLUMNS} FROM client_channels WHERE contract_txid = ?", (contract_txid,)
            ).fetchone()
            return None if row is None else self._client_logged(_client_record(row))

        return self._submit(op, False)

    def client_channels(self, state: Optional[ClientChannelState] = None) -> defer.Deferred[list[ClientChannelRecord]]:
        def op(db: sqlite3.Connection) -> list[ClientChannelRecord]:
            if state is None:
                rows = db.execute(f"SELECT {_CLIENT_COLUMNS} FROM client_channels ORDER BY seq").fetchall()
            else:
                rows = db.execute(f"SELECT {_CLIENT_COLUMNS} FROM client_channels WHERE state = ? ORDER BY seq",
                                  (state.value,)).fetchall()
            return [self._client_logged(_client_record(r)) for r in rows]

        return self._submit(op, False)

    # -- shutting down ------------------------------------------------------------------------

    def close(self) -> defer.Deferred[None]:
        """Carry out what is queued, absorb the log into the tables, close and unlock."""
        if self._closing:
            return defer.succeed(None)
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        self._closing = True
        if self._flush_call is not None:  # queued by callbacks of that last batch: too late
            self._flush_call.cancel()
            self._flush_call = None
            batch, self._batch = self._batch, []
            self._deliver([(p.deferred, _failure(StoreError("the store is closed"))) for p in batch])
        try:
            if self._broken is None:
                self._checkpoint()
        finally:
            self._paylog.close()
            self._db.close()
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
        return defer.succeed(None)


def open_store(data_dir: str, reactor: Optional[IReactorTime] = None) -> SqliteChannelStore:
    """The store of a data directory: ``DATA_DIR/channels.sqlite`` (and its payment log)."""
    os.makedirs(data_dir, exist_ok=True)
    return SqliteChannelStore(os.path.join(data_dir, "channels.sqlite"), reactor)
