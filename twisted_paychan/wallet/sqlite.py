"""
``SqliteWallet``: the durable wallet, one SQLite file per wallet.

Durability. The database runs in WAL mode with ``synchronous=FULL``: a transaction that stores
a key, a funded transaction with its reservations, or a release is on disk (fsync of the WAL)
before the call that made it returns, so a crash can neither take back a key that was handed to
a channel nor forget which coins a not-yet-broadcast transaction spends. The coins are the
exception: they are the chain's word, written block by block (``wallet.follow``: each block's
changes and the new sync point in one transaction) with ``synchronous=NORMAL``; a power cut
can lose the last blocks written, never half of one, and the wallet reads them from the chain
again when it starts. ``secure_delete`` is on, so a key overwritten by ``encrypt`` does not
linger in free pages.

All SQLite calls run on the calling (reactor) thread. Each is a small write, a few milliseconds
at most with the fsync; the keys a payment signs with are in memory and never wait for the disk.

One process at a time. :meth:`SqliteWallet.open` takes an exclusive ``flock`` on
``<file>.lock`` and holds it until :meth:`close`; a second open, from another process or from
this one, fails with :class:`WalletInUse` rather than letting two wallets reserve the same coins.

Encryption. With a passphrase, private keys and the seed are stored sealed (see ``crypto``); the
passphrase is needed to open the wallet, since signing must not wait for a person. Everything
else (public keys, derivation paths, coins, transactions) is stored in the clear.

Seeds. A new file gets a seed (``meta.seed``: the BIP39 entropy) and derives every key from it;
the keys are still stored, so opening never re-derives and a file from before seeds (schema 1,
random keys, no seed) is read the same way. Opening a schema-1 file adds the two columns of
schema 2 (``path``, ``label``) and nothing else: its keys stay random.

Following the chain (schema 3). ``blocks`` holds the hashes of the last blocks the coins are
synced to (the newest is where a restart follows on from; the others let a reorganisation be
undone); a coin spent in one of them stays in ``coins`` with its ``spent_height`` until that
block is deeper than ``follow.UNDO_DEPTH``. Opening a schema-2 file empties its coin cache
(the wallet then scans the chain once, as a new one does) and adds the column and the table.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, Optional, Union

from bitcoin.core import CTransaction
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_paychan.bitcoin.addresses import NETWORKS, REGTEST, Network
from twisted_paychan.chain.types import FundedTransaction, OutPoint, Utxo
from twisted_paychan.wallet.base import BaseWallet, FundedRecord, FundedState
from twisted_paychan.wallet.follow import CoinWrite, SpentCoin
from twisted_paychan.wallet.crypto import DEFAULT_SCRYPT, KeyCipher, ScryptParams
from twisted_paychan.wallet.errors import (
    AlreadyEncrypted,
    NotEncrypted,
    PassphraseRequired,
    WalletCorrupt,
    WalletError,
    WalletInUse,
    WalletMismatch,
)
from twisted_paychan.wallet.hd import Seed
from twisted_paychan.wallet.keys import KeyPurpose, ScriptType, WalletKey

if TYPE_CHECKING:
    from twisted_paychan.wallet.key_commits import KeyCommits

__all__ = ["SqliteWallet", "SCHEMA_VERSION"]

#: ``PRAGMA user_version`` of the files this code writes.
SCHEMA_VERSION = 3
#: The block hashes a wallet follows the chain by, and the indexes that make a block's undo
#: and pruning cost what they touch (schema 3).
_FOLLOW_SCHEMA = (
    """CREATE TABLE blocks (
        height        INTEGER PRIMARY KEY,
        hash          BLOB NOT NULL
    )""",
    "CREATE INDEX coins_by_height ON coins (height)",
    "CREATE INDEX coins_by_spent_height ON coins (spent_height) WHERE spent_height IS NOT NULL",
)
#: What turns a file of each older version into the next one, in one transaction.
_MIGRATIONS = {
    1: ("ALTER TABLE keys ADD COLUMN path TEXT", "ALTER TABLE keys ADD COLUMN label BLOB"),
    2: (
        "DELETE FROM coins",  # a cache of refreshes: the first sync scans the chain instead
        "DELETE FROM meta WHERE name = 'tip_height'",
        "ALTER TABLE coins ADD COLUMN spent_height INTEGER",
        *_FOLLOW_SCHEMA,
    ),
}
#: Associated data of the sealed seed: a sealed key moved onto it does not open.
_SEED_AAD = b"seed"

#: The tables, one statement each (run inside the creating transaction, in order).
_SCHEMA = (
    """CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    # secret: the raw 32-byte key, or nonce || ciphertext || tag when meta has 'kdf'.
    # path: where the seed derives it (NULL: random); label: the channel a payout key is for.
    """CREATE TABLE keys (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        public_key    BLOB NOT NULL UNIQUE,
        purpose       TEXT NOT NULL CHECK (purpose IN ('channel', 'receive', 'payout')),
        script_type   TEXT CHECK (script_type IN ('p2wpkh', 'p2pkh')),
        secret        BLOB NOT NULL,
        path          TEXT,
        label         BLOB
    )""",
    # The confirmed outputs paying our scripts as of the newest block in ``blocks``: unspent,
    # or spent in one of those blocks (spent_height), kept so a reorganisation can undo it.
    """CREATE TABLE coins (
        txid          BLOB NOT NULL,
        vout          INTEGER NOT NULL,
        value         INTEGER NOT NULL,
        script_pubkey BLOB NOT NULL,
        height        INTEGER,
        coinbase      INTEGER NOT NULL,
        spent_height  INTEGER,
        PRIMARY KEY (txid, vout)
    )""",
    """CREATE TABLE funded (
        txid          BLOB PRIMARY KEY,
        tx            BLOB NOT NULL,
        fee           INTEGER NOT NULL,
        change_index  INTEGER,
        state         TEXT NOT NULL CHECK (state IN ('reserved', 'spent', 'released'))
    )""",
    """CREATE TABLE reservations (
        txid          BLOB NOT NULL,
        vout          INTEGER NOT NULL,
        funded_txid   BLOB NOT NULL REFERENCES funded (txid),
        PRIMARY KEY (txid, vout)
    )""",
    *_FOLLOW_SCHEMA,
)


def _create_private(path: str) -> None:
    """Create ``path`` readable by its owner only, unless it exists. SQLite gives the WAL and
    shared-memory files the same permissions as the database file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _lock(path: str) -> IO[bytes]:
    lock_path = path + ".lock"
    _create_private(lock_path)
    f = open(lock_path, "ab")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise WalletInUse(f"wallet {path} is already open (lock {lock_path} is held)") from None
    except BaseException:
        f.close()
        raise
    return f


class SqliteWallet(BaseWallet):
    """IWallet stored in one SQLite file. Use :meth:`open`, and :meth:`close` when done."""

    def __init__(
        self,
        chain: Any,
        network: Network,
        db: sqlite3.Connection,
        lock: IO[bytes],
        path: str,
    ) -> None:
        super().__init__(chain, network)
        self._db = db
        self._lockfile: Optional[IO[bytes]] = lock
        self.path = path
        self._cipher: Optional[KeyCipher] = None
        #: True when this open created the file (the caller shows the new seed's words once).
        self.created = False
        #: ``commit_keys_in_thread``: the thread that commits kept channel keys, and the keys
        #: being committed.
        self._key_commits: Optional[KeyCommits] = None
        self._keeping: dict[bytes, list[Deferred[None]]] = {}

    # -- Opening and closing --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Union[str, os.PathLike[str]],
        chain: Any,
        network: Network = REGTEST,
        passphrase: Optional[str] = None,
        scrypt: ScryptParams = DEFAULT_SCRYPT,
        seed: Optional[Seed] = None,
    ) -> "SqliteWallet":
        """Open the wallet at ``path``, creating it if there is no file.

        A new wallet is encrypted when ``passphrase`` is given (with ``scrypt`` cost). An
        existing encrypted wallet needs its passphrase (:class:`PassphraseRequired`,
        :class:`WrongPassphrase`); giving one to an unencrypted wallet is an error too, so
        nobody believes their keys are protected when they are not.

        A new wallet gets a fresh seed, or ``seed`` (a restore); giving ``seed`` for a file that
        already is a wallet is a :class:`WalletError`.
        """
        path = os.fspath(path)
        lock = _lock(path)
        db = None
        try:
            _create_private(path)  # an empty file is an empty database
            db = sqlite3.connect(path, isolation_level=None)
            wallet = cls(chain, network, db, lock, path)
            wallet._setup(passphrase, scrypt, seed)
        except BaseException:
            if db is not None:
                db.close()
            lock.close()
            raise
        wallet.log.info("opened wallet {path} ({network})", path=path, network=network.name)
        return wallet

    def close(self) -> None:
        """Stop watching the chain, close the database and give up the lock. Idempotent."""
        self.stop()
        if self._key_commits is not None:
            self._key_commits.close()
        if self._lockfile is not None:
            self._db.close()
            self._lockfile.close()  # closing the file releases the flock
            self._lockfile = None

    @property
    def is_encrypted(self) -> bool:
        return self._meta("kdf") is not None

    def _setup(self, passphrase: Optional[str], scrypt: ScryptParams, seed: Optional[Seed]) -> None:
        db = self._db
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:  # e.g. OperationalError: not about content
                raise
            raise WalletCorrupt(f"{self.path} is not a wallet: {e}") from e
        if mode != "wal":
            raise WalletError(f"SQLite refused WAL mode for {self.path} (got {mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA secure_delete = ON")
        db.execute("PRAGMA foreign_keys = ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._create(passphrase, scrypt, seed or Seed.generate(self.network))
            self.created = True
        elif seed is not None:
            raise WalletError(f"{self.path} is already a wallet; restore into a new file")
        elif version in _MIGRATIONS:
            self._migrate(version)
        elif version != SCHEMA_VERSION:
            raise WalletCorrupt(f"{self.path} has schema version {version}, this code reads {SCHEMA_VERSION}")
        stored = self._meta("network")
        if stored not in NETWORKS:
            raise WalletCorrupt(f"{self.path} names no known network ({stored!r})")
        if stored != self.network.name:
            raise WalletMismatch(f"{self.path} is a {stored} wallet, not {self.network.name}")
        self._unlock(passphrase)
        self._load()
        self._ensure_payout_key()

    def _create(self, passphrase: Optional[str], scrypt: ScryptParams, seed: Seed) -> None:
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._set_meta("network", self.network.name)
            cipher = None
            if passphrase is not None:
                cipher = self._write_kdf(passphrase, scrypt)  # _unlock derives the key again: a check
            self._write_seed(seed, cipher)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        with self._transaction():
            while version in _MIGRATIONS:
                for statement in _MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
            self._db.execute(f"PRAGMA user_version = {version}")
        self.log.info("wallet {path} upgraded to schema {version}", path=self.path, version=version)

    def _write_seed(self, seed: Seed, cipher: Optional[KeyCipher]) -> None:
        stored = seed.entropy if cipher is None else cipher.seal(seed.entropy, _SEED_AAD)
        self._set_meta("seed", stored.hex())

    def _read_seed(self) -> Optional[Seed]:
        stored = self._meta("seed")
        if stored is None:
            return None
        entropy = bytes.fromhex(stored)
        if self._cipher is not None:
            entropy = self._cipher.open(entropy, _SEED_AAD)
        return Seed(entropy, self.network)

    def _unlock(self, passphrase: Optional[str]) -> None:
        kdf = self._meta("kdf")
        if kdf is None:
            if passphrase is not None:
                raise NotEncrypted(f"{self.path} is not encrypted; call encrypt() to protect it")
            return
        if passphrase is None:
            raise PassphraseRequired(f"{self.path} is encrypted; a passphrase is needed")
        salt, verifier = self._meta("salt"), self._meta("verifier")
        if salt is None or verifier is None:
            raise WalletCorrupt("encrypted wallet without salt or verifier")
        cipher = KeyCipher.derive(passphrase, bytes.fromhex(salt), ScryptParams.decode(kdf))
        cipher.check_verifier(bytes.fromhex(verifier))
        self._cipher = cipher

    def _load(self) -> None:
        self._seed = self._read_seed()
        for public_key, purpose, script_type, secret, path, label in self._db.execute(
            "SELECT public_key, purpose, script_type, secret, path, label FROM keys ORDER BY id"
        ):
            if self._cipher is not None:
                secret = self._cipher.open(secret, public_key)
            key = WalletKey.from_secret(
                secret, KeyPurpose(purpose), None if script_type is None else ScriptType(script_type),
                path, None if label is None else bytes(label),
            )
            if key.public_key != public_key:
                raise WalletCorrupt(f"stored key {public_key.hex()} does not match its secret")
            self._load_key(key)
        unspent: list[Utxo] = []
        spent_coins: list[SpentCoin] = []
        for txid, vout, value, script_pubkey, height, coinbase, spent_height in self._db.execute(
            "SELECT txid, vout, value, script_pubkey, height, coinbase, spent_height FROM coins"
        ):
            point = OutPoint(txid, vout)
            utxo = Utxo(point, value, script_pubkey, height, bool(coinbase))
            if spent_height is None:
                unspent.append(utxo)
            else:
                spent_coins.append(SpentCoin(utxo, spent_height))
        blocks = {height: bytes(block_hash) for height, block_hash in self._db.execute("SELECT height, hash FROM blocks")}
        self._book.load(unspent, spent_coins, blocks)
        self._coins = self._book.view()
        self._tip_height = None if self._book.synced is None else self._book.synced.height
        reserved: dict[bytes, list[OutPoint]] = {}
        for txid, vout, funded_txid in self._db.execute(
            "SELECT txid, vout, funded_txid FROM reservations"
        ):
            reserved.setdefault(funded_txid, []).append(OutPoint(txid, vout))
        for txid, raw, fee, change_index, state in self._db.execute(
            "SELECT txid, tx, fee, change_index, state FROM funded ORDER BY rowid"
        ):
            spent = tuple(
                OutPoint(bytes(i.prevout.hash), i.prevout.n)
                for i in CTransaction.deserialize(raw).vin
            )
            funded = FundedTransaction(raw, txid, fee, change_index, spent)
            self._load_funded(FundedRecord(funded, FundedState(state)), reserved.get(txid, ()))

    # -- Encryption -----------------------------------------------------------------------

    def encrypt(self, passphrase: str, scrypt: ScryptParams = DEFAULT_SCRYPT) -> None:
        """Encrypt every private key and the seed under ``passphrase``; from now on
        :meth:`open` needs it.

        The plaintext keys are overwritten, the file is vacuumed and the WAL truncated, so the
        file no longer holds them. Copies made before (backups, snapshots) still do.
        """
        if self.is_encrypted:
            raise AlreadyEncrypted(f"{self.path} is already encrypted")
        with self._transaction():
            cipher = self._write_kdf(passphrase, scrypt)
            for (public_key,) in self._db.execute("SELECT public_key FROM keys").fetchall():
                secret = self._keys[public_key].secret
                self._db.execute(
                    "UPDATE keys SET secret = ? WHERE public_key = ?",
                    (cipher.seal(secret, public_key), public_key),
                )
            if self._seed is not None:
                self._write_seed(self._seed, cipher)
        self._cipher = cipher
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.log.info("encrypted the keys of wallet {path}", path=self.path)

    def _write_kdf(self, passphrase: str, scrypt: ScryptParams) -> KeyCipher:
        salt = KeyCipher.new_salt()
        cipher = KeyCipher.derive(passphrase, salt, scrypt)
        self._set_meta("kdf", scrypt.encode())
        self._set_meta("salt", salt.hex())
        self._set_meta("verifier", cipher.make_verifier().hex())
        return cipher

    # -- Persistence hooks ----------------------------------------------------------------

    def _persist_key(self, key: WalletKey) -> None:
        secret = key.secret if self._cipher is None else self._cipher.seal(key.secret, key.public_key)
        with self._transaction():
            self._db.execute(
                "INSERT INTO keys (public_key, purpose, script_type, secret, path, label) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key.public_key,
                    key.purpose.value,
                    None if key.script_type is None else key.script_type.value,
                    secret,
                    key.path,
                    key.label,
                ),
            )

    # -- Channel keys a server keeps, committed in a thread (``wallet.key_commits``) ----------

    def commit_keys_in_thread(self, reactor: Any) -> None:
        """From now on ``keep_channel_key`` commits in a thread of its own and returns a
        Deferred that fires once the key is durable (the server: its reactor never waits for
        that fsync); without this call it commits before returning, as every wallet may."""
        from twisted_paychan.wallet.key_commits import KeyCommits

        if self._key_commits is None:
            self._key_commits = KeyCommits(self.path, reactor)

    def keep_channel_key(self, public_key: bytes) -> Optional[Deferred[None]]:
        public_key = bytes(public_key)
        commits, key = self._key_commits, self._provisional.get(public_key)
        if commits is None or key is None:
            return super().keep_channel_key(public_key)
        waiters = self._keeping.get(public_key)
        if waiters is None:  # one INSERT per key, however often it is kept meanwhile
            waiters = self._keeping[public_key] = []
            secret = key.secret if self._cipher is None else self._cipher.seal(key.secret, key.public_key)
            commits.keep((key.public_key, key.purpose.value, None if key.script_type is None else key.script_type.value,
                          secret, key.path, key.label)).addBoth(self._key_kept, key)
        waiter: Deferred[None] = Deferred()
        waiters.append(waiter)
        return waiter

    def _key_kept(self, result: Optional[Failure], key: WalletKey) -> None:
        waiters = self._keeping.pop(key.public_key, [])
        if isinstance(result, Failure):  # not kept: the channel that would name it is not stored
            for waiter in waiters:
                waiter.errback(result)
            return
        # Durable now: held like any stored key, even if its handshake has ended meanwhile.
        self._load_key(key)
        self._provisional.pop(key.public_key, None)
        self.log.info("new channel key {public_key}", public_key=key.public_key.hex())
        for waiter in waiters:
            waiter.callback(None)

    def _persist_tracked(self, key: WalletKey) -> None:
        assert key.script_type is not None
        with self._transaction():
            self._db.execute(
                "UPDATE keys SET script_type = ? WHERE public_key = ?", (key.script_type.value, key.public_key)
            )

    def _persist_funded(self, funded: FundedTransaction) -> None:
        with self._transaction():
            self._db.execute(
                # Funding the same coins for the same output after a release gives the same
                # transaction again (signing is deterministic): the old row comes back to life.
                "INSERT INTO funded (txid, tx, fee, change_index, state) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (txid) DO UPDATE SET state = excluded.state",
                (funded.txid, funded.tx, funded.fee, funded.change_index, FundedState.RESERVED.value),
            )
            self._db.executemany(
                "INSERT INTO reservations (txid, vout, funded_txid) VALUES (?, ?, ?)",
                [(op.txid, op.index, funded.txid) for op in funded.spent],
            )

    def _persist_unreserved(
        self, outpoints: Iterable[OutPoint], states: dict[bytes, FundedState]
    ) -> None:
        with self._transaction():
            self._db.executemany(
                "DELETE FROM reservations WHERE txid = ? AND vout = ?",
                [(op.txid, op.index) for op in outpoints],
            )
            self._db.executemany(
                "UPDATE funded SET state = ? WHERE txid = ?",
                [(state.value, txid) for txid, state in states.items()],
            )

    def _persist_coin_write(self, write: CoinWrite) -> None:
        # The chain's word, read again from the chain if a power cut takes the last blocks.
        self._db.execute("PRAGMA synchronous = NORMAL")
        try:
            with self._transaction():
                self._write_coins(write)
        finally:
            self._db.execute("PRAGMA synchronous = FULL")

    def _write_coins(self, write: CoinWrite) -> None:
        db = self._db
        if write.replace:
            db.execute("DELETE FROM coins")
            db.execute("DELETE FROM blocks")
        db.executemany(
            "INSERT OR REPLACE INTO coins VALUES (?, ?, ?, ?, ?, ?, NULL)",
            [(u.outpoint.txid, u.outpoint.index, u.value, u.script_pubkey, u.height, int(u.coinbase))
             for u in write.created],
        )
        db.executemany("UPDATE coins SET spent_height = ? WHERE txid = ? AND vout = ?",
                       [(height, op.txid, op.index) for op, height in write.spent])
        db.executemany("UPDATE coins SET spent_height = NULL WHERE txid = ? AND vout = ?",
                       [(op.txid, op.index) for op in write.unspent])
        db.executemany("DELETE FROM coins WHERE txid = ? AND vout = ?", [(op.txid, op.index) for op in write.deleted])
        if write.blocks_removed_from is not None:
            db.execute("DELETE FROM blocks WHERE height >= ?", (write.blocks_removed_from,))
        if write.block_added is not None:
            db.execute("INSERT OR REPLACE INTO blocks (height, hash) VALUES (?, ?)",
                       (write.block_added.height, write.block_added.block_hash))
        if write.prune_to is not None:
            db.execute("DELETE FROM coins WHERE spent_height <= ?", (write.prune_to,))
            db.execute("DELETE FROM blocks WHERE height <= ?", (write.prune_to,))

    # -- SQLite helpers -------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error. Not nestable."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, name: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
