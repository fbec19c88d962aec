"""
The mempool cut into chunks, for the ``chunkweight`` and ``fees.chunk`` that Core 31 reports of
each mempool entry.

Core 31 (cluster mempool) linearizes each cluster of related transactions and splits the
linearization into chunks, mined together: a child paying for its parent shares the parent's
chunk. We linearize greedily by ancestor sets: the remaining transaction whose ancestor set
(with the remaining ancestors only) has the best fee rate goes next, with those ancestors, as
one chunk. For the clusters channels make (one transaction, or a parent and a child) this is
what Core finds; Core's optimal linearization may differ on larger clusters.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping, Protocol, Sequence


class _Entry(Protocol):
    @property
    def txid(self) -> bytes: ...

    @property
    def fee(self) -> int: ...

    @property
    def weight(self) -> int: ...


def mempool_chunks(entries: Sequence[_Entry], parents: Mapping[bytes, Sequence[bytes]]) -> dict[bytes, tuple[int, int]]:
    """txid -> (its chunk's weight, its chunk's fee), ``parents`` giving each entry's
    in-mempool parents."""
    by_txid = {e.txid: e for e in entries}
    remaining = set(by_txid)
    chunk_of: dict[bytes, tuple[int, int]] = {}

    def ancestors(txid: bytes) -> set[bytes]:
        found = {txid}
        stack = [txid]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent in remaining and parent not in found:
                    found.add(parent)
                    stack.append(parent)
        return found

    while remaining:
        best: tuple[Fraction, bytes, set[bytes]] | None = None
        for txid in sorted(remaining):
            group = ancestors(txid)
            rate = Fraction(sum(by_txid[t].fee for t in group), max(1, sum(by_txid[t].weight for t in group)))
            if best is None or rate > best[0]:
                best = (rate, txid, group)
        assert best is not None
        group = best[2]
        chunk = (sum(by_txid[t].weight for t in group), sum(by_txid[t].fee for t in group))
        for t in group:
            chunk_of[t] = chunk
        remaining -= group
    return chunk_of


__all__ = ["mempool_chunks"]
