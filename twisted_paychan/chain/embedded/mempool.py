"""
Transactions accepted for the next blocks, in the order they arrived.

A transaction is only accepted once its mempool parents are, so arrival order is a dependency
order and the miner can take the pool front to back. A replacement (Core's full RBF, judged by
``replacement``) removes what it evicts before it is added; no other eviction, no expiry: a
regtest node mines everything soon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

from bitcoin.core import CTransaction

from twisted_paychan.chain.types import OutPoint, Utxo


@dataclass(frozen=True)
class MempoolEntry:
    txid: bytes
    tx: CTransaction
    raw: bytes
    fee: int
    weight: int
    #: Reactor time when it was accepted.
    time: float

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4


def inputs_of(tx: CTransaction) -> list[OutPoint]:
    return [OutPoint(bytes(txin.prevout.hash), txin.prevout.n) for txin in tx.vin]


class Mempool:
    def __init__(self) -> None:
        self.entries: dict[bytes, MempoolEntry] = {}
        self.spends: dict[OutPoint, bytes] = {}
        #: The outputs of entries that no other entry spends, by script: a wallet asking for
        #: its unconfirmed coins costs what it finds, not a walk of the whole pool (ten
        #: thousand contracts waiting for a block, each with change a later one spends, made
        #: every open walk all of them: issue #21).
        self._paying: dict[bytes, dict[OutPoint, int]] = {}

    def __contains__(self, txid: object) -> bool:
        return txid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[MempoolEntry]:
        return iter(list(self.entries.values()))

    def get(self, txid: bytes) -> Optional[MempoolEntry]:
        return self.entries.get(txid)

    def add(self, entry: MempoolEntry) -> None:
        self.entries[entry.txid] = entry
        for point in inputs_of(entry.tx):
            self.spends[point] = entry.txid
            self._unpaying(point)
        for index, txout in enumerate(entry.tx.vout):
            self._paying.setdefault(bytes(txout.scriptPubKey), {})[OutPoint(entry.txid, index)] = txout.nValue

    def _unpaying(self, point: OutPoint) -> None:
        parent = self.entries.get(point.txid)
        if parent is not None and point.index < len(parent.tx.vout):
            script = bytes(parent.tx.vout[point.index].scriptPubKey)
            points = self._paying.get(script)
            if points is not None:
                points.pop(point, None)
                if not points:
                    del self._paying[script]

    def _drop(self, txid: bytes) -> Optional[MempoolEntry]:
        """Take ``txid`` out of the entries and the script index, and unmark what it spent
        (an output of an entry still here is unspent again)."""
        entry = self.entries.get(txid)
        if entry is None:
            return None
        for index in range(len(entry.tx.vout)):
            self._unpaying(OutPoint(txid, index))
        del self.entries[txid]
        for point in inputs_of(entry.tx):
            if self.spends.get(point) == txid:
                del self.spends[point]
                parent = self.entries.get(point.txid)
                if parent is not None:
                    txout = parent.tx.vout[point.index]
                    self._paying.setdefault(bytes(txout.scriptPubKey), {})[point] = txout.nValue
        return entry

    def coin(self, point: OutPoint) -> Optional[Utxo]:
        """An output of a mempool transaction, as a not-yet-confirmed coin."""
        parent = self.entries.get(point.txid)
        if parent is None or point.index >= len(parent.tx.vout):
            return None
        txout = parent.tx.vout[point.index]
        return Utxo(point, txout.nValue, bytes(txout.scriptPubKey), None)

    def outputs_paying(self, script_pubkey: bytes) -> list[Utxo]:
        """The outputs of entries paying ``script_pubkey`` that no entry spends."""
        return [Utxo(point, value, script_pubkey, None) for point, value in self._paying.get(script_pubkey, {}).items()]

    def remove(self, txids: Iterable[bytes]) -> list[MempoolEntry]:
        """Remove these transactions and everything descending from them."""
        removed = []
        pending = list(txids)
        while pending:
            entry = self._drop(pending.pop())
            if entry is None:
                continue
            removed.append(entry)
            pending.extend(
                child
                for index in range(len(entry.tx.vout))
                if (child := self.spends.get(OutPoint(entry.txid, index))) is not None
            )
        return removed

    def remove_for_block(self, block_txs: Sequence[CTransaction], txids: Sequence[bytes]) -> list[MempoolEntry]:
        """A block confirmed ``block_txs``: drop them, and whatever spent the same coins (those
        are returned)."""
        confirmed = []
        conflicting = []
        for tx, txid in zip(block_txs, txids):
            if txid in self.entries:
                confirmed.append(txid)
                continue
            if tx.is_coinbase():
                continue
            for point in inputs_of(tx):
                other = self.spends.get(point)
                if other is not None:
                    conflicting.append(other)
        for txid in confirmed:
            # Confirmed: leaves the pool, its children stay (their parent is now a coin).
            self._drop(txid)
        return self.remove(conflicting)

    def clear(self) -> list[MempoolEntry]:
        entries = list(self.entries.values())
        self.entries.clear()
        self.spends.clear()
        self._paying.clear()
        return entries
