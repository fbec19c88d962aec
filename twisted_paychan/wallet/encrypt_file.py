"""
Encrypting an existing plaintext wallet file in place, crash-safely.

:meth:`SqliteWallet.encrypt` seals the keys inside the open database; the plaintext keys then
stay in the file's free pages and in the WAL until SQLite overwrites them. This module instead
writes a *new* file: a copy of the wallet (``VACUUM INTO``), its keys sealed there and the copy
vacuumed, synced, and renamed over the old file with :func:`files.replace_durably`. A crash at
any moment leaves the old file (plus a leftover ``.encrypting`` copy, removed by the next
attempt) or the new one, never neither and never a mixture. The wallet's lock is held
throughout, so a running server or another command cannot be using the file.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Final, Union

from twisted_paychan.bitcoin.addresses import NETWORKS
from twisted_paychan.faults import crash_point
from twisted_paychan.files import replace_durably, sync_file
from twisted_paychan.wallet.crypto import DEFAULT_SCRYPT, ScryptParams
from twisted_paychan.wallet.errors import AlreadyEncrypted, PassphraseRequired, WalletCorrupt
from twisted_paychan.wallet.sqlite import SqliteWallet

__all__ = ["encrypt_wallet_file", "stored_network", "TMP_SUFFIX"]

#: The new file while it is being made.
TMP_SUFFIX: Final = ".encrypting"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def encrypt_wallet_file(path: Union[str, "os.PathLike[str]"], passphrase: str, scrypt: ScryptParams = DEFAULT_SCRYPT) -> None:
    """Replace the plaintext wallet at ``path`` by an encrypted copy under ``passphrase``.
    :class:`AlreadyEncrypted` if it is encrypted; :class:`WalletInUse` if something has it open."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WalletCorrupt(f"there is no wallet at {path}")
    network_name = stored_network(path)
    try:
        wallet = SqliteWallet.open(path, None, NETWORKS[network_name])  # holds path's lock from here
    except PassphraseRequired:
        raise AlreadyEncrypted(f"{path} is already encrypted") from None
    tmp = path + TMP_SUFFIX
    try:
        if wallet.is_encrypted:
            raise AlreadyEncrypted(f"{path} is already encrypted")
        for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + ".lock"):
            _remove(leftover)  # an attempt that crashed
        old_umask = os.umask(0o077)  # VACUUM INTO creates the file: private before a key is in it
        try:
            wallet._db.execute("VACUUM INTO ?", (tmp,))
        finally:
            os.umask(old_umask)
        copy = SqliteWallet.open(tmp, None, NETWORKS[network_name])
        try:
            copy.encrypt(passphrase, scrypt)  # seals, vacuums and truncates the copy's WAL
            copy._db.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            copy.close()
        _remove(tmp + ".lock")
        sync_file(tmp)
        crash_point("wallet-encrypt-written")
        # Close the plaintext database (SQLite checkpoints and deletes its WAL, which must not
        # be applied to the new file) but keep the lock until the new file is in place.
        busy = wallet._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise WalletCorrupt(f"cannot checkpoint {path}; nothing was changed")
        wallet._db.close()
        for stale in (path + "-wal", path + "-shm"):
            _remove(stale)
        replace_durably(tmp, path)
        crash_point("wallet-encrypt-replaced")
    finally:
        lock = wallet._lockfile
        wallet._lockfile = None
        wallet._db.close()
        if lock is not None:
            lock.close()


def stored_network(path: str) -> str:
    """The name of the network a wallet file is for, read without opening it as a wallet."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'network'").fetchone()
    except sqlite3.DatabaseError as e:
        raise WalletCorrupt(f"{path} is not a wallet: {e}") from None
    finally:
        db.close()
    if row is None or row[0] not in NETWORKS:
        raise WalletCorrupt(f"{path} names no known network")
    return str(row[0])
