"""
The indexes the kernel does not keep: the active chain's headers, the UTXO set by outpoint and
by script, which transaction spent each outpoint, and where every transaction is (block height
and byte range: its bytes are read back from the kernel's block files, never kept here).

Only the headers stay in memory (80 bytes a block). Everything that grows with the number of
transactions, the UTXO set, the spends and the transaction locations, lives in a SQLite file
beside the kernel's (``INDEX_FILE``), so a node that has mined a million transactions holds no
more of them in memory than SQLite's page cache (issue #21: a server embedding the node runs
for months). A point lookup there costs a few microseconds, about what the watchers and the
mempool's checks can afford per outpoint.

The kernel exposes no coins view, so the UTXO set here is our own, kept in step with the
kernel's ``block_connected`` / ``block_disconnected`` events; a disconnect restores the spent
coins from the kernel's undo data. The file is a cache, not a record: it is written without
journal or sync and rebuilt from the kernel's blocks each time the node opens (the blocks of
the active chain replayed through :meth:`ChainIndex.connect`), so a crash can never leave it
out of step with the kernel.
"""

from __future__ import annotations

import io
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from bitcoin.core import CTransaction
from bitcoin.core.serialize import Hash as sha256d
from bitcoin.core.serialize import VarIntSerializer

from twisted_paychan.chain.embedded import rules
from twisted_paychan.chain.embedded.kernel import SpentCoin
from twisted_paychan.chain.types import OutPoint, Utxo


@dataclass(frozen=True)
class ParsedBlock:
    """A block split into what the indexes need, without python-bitcoinlib's CBlock (which
    rebuilds both merkle trees on every parse)."""

    block_hash: bytes
    header: bytes
    txs: list[CTransaction]
    #: Each transaction's serialization as it appears in the block (with witness).
    raws: list[bytes]
    txids: list[bytes]
    #: Where each transaction starts in the serialized block.
    starts: list[int] = field(default_factory=list)

    @property
    def prev_hash(self) -> bytes:
        return self.header[4:36]



def parse_block(raw_block: bytes) -> ParsedBlock:
    """Split a serialized block; raises ValueError (or a python-bitcoinlib error) if malformed."""
    if len(raw_block) < 81:
        raise ValueError("a block is at least 81 bytes")
    header = bytes(raw_block[:80])
    stream = io.BytesIO(raw_block)
    stream.seek(80)
    count = VarIntSerializer.stream_deserialize(stream)
    txs, raws, txids, starts = [], [], [], []
    for _ in range(count):
        start = stream.tell()
        tx = CTransaction.stream_deserialize(stream)
        raw = bytes(raw_block[start : stream.tell()])
        starts.append(start)
        txs.append(tx)
        raws.append(raw)
        txids.append(tx.GetTxid() if tx.has_witness() else sha256d(raw))
    if stream.read(1):
        raise ValueError("trailing bytes after the block's transactions")
    return ParsedBlock(sha256d(header), header, txs, raws, txids, starts)


@dataclass(frozen=True)
class BlockRecord:
    block_hash: bytes
    height: int
    header: bytes  # 80 bytes

    @property
    def time(self) -> int:
        return int(struct.unpack_from("<I", self.header, 68)[0])


@dataclass(frozen=True, slots=True)
class TxRecord:
    """Where a confirmed transaction is: its bytes are ``block_at(height)[start:end]``."""

    height: int
    block_hash: bytes
    position: int  # index in its block
    start: int
    end: int


class IndexInconsistent(RuntimeError):
    """The kernel told us something inconsistent with what we indexed (a bug)."""


_SCHEMA = """
CREATE TABLE txs (txid BLOB PRIMARY KEY, height INTEGER NOT NULL, position INTEGER NOT NULL,
                  start INTEGER NOT NULL, stop INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE spends (txid BLOB NOT NULL, vout INTEGER NOT NULL, spender BLOB NOT NULL,
                     PRIMARY KEY (txid, vout)) WITHOUT ROWID;
CREATE TABLE utxos (txid BLOB NOT NULL, vout INTEGER NOT NULL, value INTEGER NOT NULL,
                    script BLOB NOT NULL, height INTEGER NOT NULL, coinbase INTEGER NOT NULL,
                    PRIMARY KEY (txid, vout)) WITHOUT ROWID;
CREATE INDEX utxos_by_script ON utxos (script, txid, vout);
"""

#: SQLite's page cache for the index, in KiB: bounded whatever the chain's length.
CACHE_KIB = 8192

_UtxoRow = tuple[bytes, int, int, bytes, int, int]


def _utxo(row: _UtxoRow) -> Utxo:
    return Utxo(OutPoint(row[0], row[1]), row[2], row[3], row[4], bool(row[5]))


class ChainIndex:
    """The indexes of one node; ``path`` is its SQLite file (replaced: see the module
    docstring), or None to keep it in memory (a node without a data directory of its own)."""

    def __init__(self, path: Union[str, Path, None] = None) -> None:
        self.blocks: list[BlockRecord] = []
        self._height_of: dict[bytes, int] = {}
        if path is not None:
            Path(path).unlink(missing_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- queries ---------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self.blocks) - 1

    def height_of(self, block_hash: bytes) -> Optional[int]:
        return self._height_of.get(block_hash)

    def mtp_at(self, height: int) -> int:
        return rules.median_time_past([b.time for b in self.blocks[max(0, height - 10) : height + 1]])

    def tx(self, txid: bytes) -> Optional[TxRecord]:
        """Where a transaction of the active chain is, or None."""
        row = self._db.execute("SELECT height, position, start, stop FROM txs WHERE txid = ?", (txid,)).fetchone()
        if row is None:
            return None
        return TxRecord(row[0], self.blocks[row[0]].block_hash, row[1], row[2], row[3])

    def has_tx(self, txid: bytes) -> bool:
        return self._db.execute("SELECT 1 FROM txs WHERE txid = ?", (txid,)).fetchone() is not None

    def spender(self, point: OutPoint) -> Optional[bytes]:
        """The txid of the active chain's transaction spending ``point``, or None."""
        row = self._db.execute("SELECT spender FROM spends WHERE txid = ? AND vout = ?",
                               (point.txid, point.index)).fetchone()
        return None if row is None else bytes(row[0])

    def coin(self, point: OutPoint) -> Optional[Utxo]:
        """The unspent output at ``point``, or None."""
        row = self._db.execute("SELECT txid, vout, value, script, height, coinbase FROM utxos "
                               "WHERE txid = ? AND vout = ?", (point.txid, point.index)).fetchone()
        return None if row is None else _utxo(row)

    def unspent_for(self, script_pubkey: bytes) -> list[Utxo]:
        rows = self._db.execute("SELECT txid, vout, value, script, height, coinbase FROM utxos "
                                "WHERE script = ? ORDER BY txid, vout", (script_pubkey,))
        return [_utxo(row) for row in rows]

    @property
    def utxo_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM utxos").fetchone()[0])

    # -- updates from the kernel -----------------------------------------------------------

    def connect(self, block: ParsedBlock, height: int) -> None:
        block_hash = block.block_hash
        if height != len(self.blocks):
            raise IndexInconsistent(f"block connected at height {height}, but the index tip is {self.height}")
        if height and block.prev_hash != self.blocks[-1].block_hash:
            raise IndexInconsistent(f"block at height {height} does not build on the indexed tip")
        txs: list[tuple[bytes, int, int, int, int]] = []
        spends: list[tuple[bytes, int, bytes]] = []
        spent_before: list[tuple[bytes, int]] = []
        created: dict[tuple[bytes, int], _UtxoRow] = {}
        for position, (tx, txid, raw, start) in enumerate(zip(block.txs, block.txids, block.raws, block.starts)):
            if position:
                for txin in tx.vin:
                    key = (bytes(txin.prevout.hash), txin.prevout.n)
                    # An output of this same block spent in it never becomes a row.
                    if created.pop(key, None) is None:
                        spent_before.append(key)
                    spends.append((key[0], key[1], txid))
            for index, txout in enumerate(tx.vout):
                script = bytes(txout.scriptPubKey)
                if script[:1] == b"\x6a":  # OP_RETURN: provably unspendable, never a coin
                    continue
                created[(txid, index)] = (txid, index, txout.nValue, script, height, int(position == 0))
            txs.append((txid, height, position, start, start + len(raw)))
        db = self._db
        db.execute("BEGIN")
        db.executemany("DELETE FROM utxos WHERE txid = ? AND vout = ?", spent_before)
        db.executemany("INSERT OR REPLACE INTO utxos VALUES (?, ?, ?, ?, ?, ?)", created.values())
        db.executemany("INSERT OR REPLACE INTO spends VALUES (?, ?, ?)", spends)
        db.executemany("INSERT OR REPLACE INTO txs VALUES (?, ?, ?, ?, ?)", txs)
        db.execute("COMMIT")
        self.blocks.append(BlockRecord(block_hash, height, block.header))
        self._height_of[block_hash] = height

    def disconnect(self, block: ParsedBlock, height: int, spent: Sequence[Sequence[SpentCoin]]) -> None:
        """Undo ``connect``; ``spent`` is the kernel's undo data (non-coinbase txs, in order)."""
        if height != self.height or block.block_hash != self.blocks[-1].block_hash:
            raise IndexInconsistent(f"block disconnected at height {height} is not the indexed tip")
        spending = block.txs[1:]
        if len(spending) != len(spent):
            raise IndexInconsistent("undo data does not match the disconnected block")
        db = self._db
        db.execute("BEGIN")
        for tx, txid in zip(reversed(block.txs), reversed(block.txids)):
            db.execute("DELETE FROM utxos WHERE txid = ? AND vout < ?", (txid, len(tx.vout)))
            db.execute("DELETE FROM txs WHERE txid = ?", (txid,))
        for tx, coins in zip(spending, spent):
            for txin, coin in zip(tx.vin, coins):
                point = (bytes(txin.prevout.hash), txin.prevout.n)
                db.execute("DELETE FROM spends WHERE txid = ? AND vout = ?", point)
                db.execute("INSERT OR REPLACE INTO utxos VALUES (?, ?, ?, ?, ?, ?)",
                           (*point, coin.value, bytes(coin.script_pubkey), coin.height, int(coin.coinbase)))
        db.execute("COMMIT")
        record = self.blocks.pop()
        del self._height_of[record.block_hash]

    def scan(self, scripts: Iterable[bytes]) -> list[Utxo]:
        """Every unspent output paying one of ``scripts`` (scantxoutset's job)."""
        found: list[Utxo] = []
        for script in set(scripts):
            found.extend(self.unspent_for(script))
        return sorted(found, key=lambda u: u.outpoint)
