"""
A consistent copy of a data directory's channel store and wallet, taken while a server may be
running on it (``paychan backup``).

What is copied, and why it is enough: the channel store (``channels.sqlite``) holds every
channel's contract, keys and the best payment signature; the wallet (``wallet.sqlite``) holds the
private keys those channels and the settlement outputs belong to. The chain is not copied: it is
the network's, and a restored server reads it again.

Each SQLite file is copied with SQLite's online backup API in one step, so the copy is one
snapshot even while the server writes: another process may read a WAL database while its owner
writes it, and the owner's ``flock`` on ``<file>.lock`` only keeps out a second *writer*. When
no server runs, this takes those locks itself, so no server can start half-way through.

The channel store keeps its latest payments in the payment log (``channels.sqlite-paylog``)
until its next checkpoint, so the tables alone can be a few payments behind. The log is read
right after the snapshot; the snapshot names the last generation its tables absorbed, and the
log's records of the next generation are the payments since. If the store checkpointed while the
log was being read (the generation in the live file moved on), the log may already belong to a
later generation, so the copy is taken again. A record for a channel the snapshot does not hold
yet (opened after it) changes nothing. The copy is then opened as a store, which replays those
records into its tables and checkpoints, so the backup is two plain SQLite files.

The store is copied before the wallet: every key a stored channel uses was in the wallet before
the channel was stored, so a later wallet snapshot holds it too.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from typing import IO, Optional

from twisted_paychan.files import replace_durably, sync_file
from twisted_paychan.secretfiles import private_directory

__all__ = ["BackupError", "BackupResult", "backup", "CHANNELS_FILE", "WALLET_FILE", "MANIFEST_FILE"]

CHANNELS_FILE = "channels.sqlite"
WALLET_FILE = "wallet.sqlite"
MANIFEST_FILE = "backup.json"

#: Snapshots of the store tried before giving up on a store that checkpoints continuously.
_ATTEMPTS = 20


class BackupError(Exception):
    """A backup that cannot be made; the message says why, for the operator."""


@dataclass(frozen=True)
class BackupResult:
    out_dir: str
    #: The files written in ``out_dir`` (the SQLite copies and the manifest).
    files: tuple[str, ...]
    server_channels: int
    client_channels: int
    wallet_keys: Optional[int]
    #: Whether another process (a running server) held the files while they were copied.
    online: bool
    #: Payments read from the payment log into the copy.
    logged_payments: int
    created: str


def _try_lock(path: str) -> Optional[IO[bytes]]:
    """The ``flock`` the store and the wallet take on ``<path>.lock``, or None if a running
    process holds it."""
    # Created owner-only when missing, as the wallet creates its own.
    f = os.fdopen(os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _private_file(path: str) -> None:
    """An empty file only its owner may read: the copies hold private keys."""
    if os.path.exists(path):
        os.unlink(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _snapshot(src: str, dst: str) -> None:
    """Copy ``src`` into ``dst`` with SQLite's online backup, all pages in one step (one read
    transaction on ``src``: one consistent snapshot). The copy is left in rollback-journal
    mode, one self-contained file; the store and the wallet switch it back to WAL when they
    open it. ``src`` is opened read-write but only read: a read-only connection would leave
    its own WAL and shared-memory files behind when no server has them open."""
    _private_file(dst)
    source = sqlite3.connect(src)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()


def _generation(db_path: str) -> int:
    db = sqlite3.connect(db_path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'paylog_generation'").fetchone()
    except sqlite3.OperationalError:  # no meta table: a store that never checkpointed
        row = None
    finally:
        db.close()
    return 0 if row is None else int(row[0])


def _copy_store(src: str, dst: str) -> int:
    """Snapshot the store at ``src`` and its payment log into ``dst`` and absorb the log; the
    number of logged payments the copy took."""
    from twisted_paychan.store import paylog
    from twisted_paychan.store.sqlite import SqliteChannelStore

    log_src, log_dst = src + "-paylog", dst + "-paylog"
    for _ in range(_ATTEMPTS):
        _snapshot(src, dst)
        generation = _generation(dst)
        try:
            with open(log_src, "rb") as f:
                log = f.read()
        except FileNotFoundError:
            log = b""
        if _generation(src) == generation:
            break
    else:
        raise BackupError(f"the channel store {src} checkpointed during each of {_ATTEMPTS} copies; try again")
    logged = sum(1 for _ in paylog.decode_slots(log, generation + 1))
    _private_file(log_dst)
    with open(log_dst, "wb") as f:
        f.write(log)
    # Opening the copy as a store replays the log into its tables; closing checkpoints it.
    store = SqliteChannelStore(dst)
    store.close()
    for leftover in (log_dst, dst + ".lock"):
        os.unlink(leftover)
    db = sqlite3.connect(dst)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    return logged


def _check(db_path: str, *tables: str) -> list[int]:
    """Refuse a copy that fails SQLite's integrity check; the number of rows of ``tables``."""
    db = sqlite3.connect(db_path)
    try:
        (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
        if verdict != "ok":
            raise BackupError(f"the copy {db_path} fails SQLite's integrity check: {verdict}")
        # The names are this module's constants, not input.
        return [int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables]
    finally:
        db.close()


def backup(data_dir: str, out_dir: str) -> BackupResult:
    """Copy the channel store and the wallet of ``data_dir`` into ``out_dir`` (created private;
    it must not hold a backup already), with a manifest, ``backup.json``."""
    store_path = os.path.join(data_dir, CHANNELS_FILE)
    wallet_path = os.path.join(data_dir, WALLET_FILE)
    if not os.path.exists(store_path) and not os.path.exists(wallet_path):
        raise BackupError(f"no channel store or wallet in {data_dir}")
    if os.path.abspath(out_dir) == os.path.abspath(data_dir):
        raise BackupError("the backup directory must not be the data directory")
    existing = [n for n in (CHANNELS_FILE, WALLET_FILE, MANIFEST_FILE) if os.path.exists(os.path.join(out_dir, n))]
    if existing:
        raise BackupError(f"{out_dir} already holds a backup ({', '.join(existing)}); give an empty directory")
    try:
        private_directory(out_dir)
    except OSError as e:
        raise BackupError(f"cannot create {out_dir}: {e.strerror or e}") from None

    locks: list[IO[bytes]] = []
    online = False
    try:
        for path in (store_path, wallet_path):
            if os.path.exists(path):
                lock = _try_lock(path)
                if lock is None:
                    online = True
                else:
                    locks.append(lock)
        written: list[str] = []
        server_channels = client_channels = logged = 0
        wallet_keys: Optional[int] = None
        try:
            if os.path.exists(store_path):
                tmp = os.path.join(out_dir, CHANNELS_FILE + ".partial")
                logged = _copy_store(store_path, tmp)
                server_channels, client_channels = _check(tmp, "server_channels", "client_channels")
                sync_file(tmp)
                replace_durably(tmp, os.path.join(out_dir, CHANNELS_FILE))
                written.append(CHANNELS_FILE)
            if os.path.exists(wallet_path):
                tmp = os.path.join(out_dir, WALLET_FILE + ".partial")
                _snapshot(wallet_path, tmp)
                (wallet_keys,) = _check(tmp, "keys")
                sync_file(tmp)
                replace_durably(tmp, os.path.join(out_dir, WALLET_FILE))
                written.append(WALLET_FILE)
        except sqlite3.Error as e:
            raise BackupError(f"copying {data_dir} failed: {e}") from None
    finally:
        for lock in locks:
            lock.close()

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result = BackupResult(
        out_dir=os.path.abspath(out_dir), files=(*written, MANIFEST_FILE), server_channels=server_channels,
        client_channels=client_channels, wallet_keys=wallet_keys, online=online, logged_payments=logged,
        created=created,
    )
    manifest = {
        "created": created, "data_dir": os.path.abspath(data_dir), "files": written,
        "server_channels": server_channels, "client_channels": client_channels, "wallet_keys": wallet_keys,
        "online": online, "logged_payments": logged,
    }
    tmp = os.path.join(out_dir, MANIFEST_FILE + ".partial")
    _private_file(tmp)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    replace_durably(tmp, os.path.join(out_dir, MANIFEST_FILE))
    return result
