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

    def coin(self, point: OutPoint) -> Optional[Utxo]:
        """An output of a mempool transaction, as a not-yet-confirmed coin."""
        parent = self.entries.get(point.txid)
        if parent is None or point.index >= len(parent.tx.vout):
            return None
        txout = parent.tx.vout[point.index]
        return Utxo(point, txout.nValue, bytes(txout.scriptPubKey), None)

    def outputs_paying(self, script_pubkey: bytes) -> list[Utxo]:
        found = []
        for entry in self.entries.values():
            for index, txout in enumerate(entry.tx.vout):
                if bytes(txout.scriptPubKey) == script_pubkey:
                    found.append(Utxo(OutPoint(entry.txid, index), txout.nValue, script_pubkey, None))
        return found

    def remove(self, txids: Iterable[bytes]) -> list[MempoolEntry]:
        """Remove these transactions and everything descending from them."""
        removed = []
        pending = list(txids)
        while pending:
            entry = self.entries.pop(pending.pop(), None)
            if entry is None:
                continue
            removed.append(entry)
            for point in inputs_of(entry.tx):
                if self.spends.get(point) == entry.txid:
                    del self.spends[point]
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
            entry = self.entries.pop(txid)
            for point in inputs_of(entry.tx):
                if self.spends.get(point) == txid:
                    del self.spends[point]
        return self.remove(conflicting)

    def clear(self) -> list[MempoolEntry]:
        entries = list(self.entries.values())
        self.entries.clear()
        self.spends.clear()
        return entries
