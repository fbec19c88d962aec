"""
What the signer remembers in order to judge requests, in ``DATA_DIR/signer.sqlite``: the channel
keys whose v1 refund it signed (once each), the best payment it has been shown for each channel
(a settlement never pays the server less), and what left the wallet when (the daily limit). No
secret is stored here; the keys are in the wallet file beside it.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Optional

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refunds (server_key BLOB PRIMARY KEY, contract_txid BLOB NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS best_payments (contract_txid BLOB PRIMARY KEY, best_value INTEGER NOT NULL,
                                          at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS spent (txid BLOB PRIMARY KEY, outflow INTEGER NOT NULL, at INTEGER NOT NULL);
"""

#: The daily limit is over the last 24 hours, not a calendar day: no midnight doubles it.
DAY = 24 * 3600


class Ledger:
    """One SQLite file, each write committed (and synced, ``synchronous=FULL``) before the
    signature it records leaves the signer."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def refund_signed(self, server_key: bytes) -> Optional[bytes]:
        """The contract txid of the refund signed with ``server_key``, if one was."""
        row = self._db.execute("SELECT contract_txid FROM refunds WHERE server_key = ?", (server_key,)).fetchone()
        return None if row is None else bytes(row[0])

    def note_refund(self, server_key: bytes, contract_txid: bytes, now: int) -> None:
        self._db.execute("INSERT INTO refunds VALUES (?, ?, ?)", (server_key, contract_txid, now))

    def best_payment(self, contract_txid: bytes) -> int:
        """The highest ``b`` shown for this channel, 0 if none."""
        row = self._db.execute("SELECT best_value FROM best_payments WHERE contract_txid = ?",
                               (contract_txid,)).fetchone()
        return 0 if row is None else int(row[0])

    def note_best_payment(self, contract_txid: bytes, best_value: int, now: int) -> None:
        self._db.execute("INSERT INTO best_payments VALUES (?, ?, ?) ON CONFLICT (contract_txid) DO UPDATE SET "
                         "best_value = max(best_value, excluded.best_value), at = excluded.at",
                         (contract_txid, best_value, now))

    def spent_since(self, since: int) -> int:
        row = self._db.execute("SELECT coalesce(sum(outflow), 0) FROM spent WHERE at > ?", (since,)).fetchone()
        return int(row[0])

    def note_spent(self, txid: bytes, outflow: int, now: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO spent VALUES (?, ?, ?)", (txid, outflow, now))
