"""
Replace-by-fee as Bitcoin Core 31 does it, for the embedded node's mempool.

Core replaces conflicting transactions without any signal (full RBF, the default since 28): a
transaction spending an outpoint that a mempool transaction spends evicts it, and everything
descending from it, if it pays for it. The checks, in Core's order and with its reasons:

1. at most :data:`MAX_REPLACEMENT_CANDIDATES` transactions evicted (``too many potential
   replacements``);
2. it spends no output of what it evicts (``bad-txns-spends-conflicting-tx``);
3. it pays at least the fees of everything it evicts, and 4. the difference pays for its own
   relay at the minimum relay fee rate (``insufficient fee``);
5. it improves the mempool's feerate diagram (``replacement-failed, insufficient feerate: does
   not improve feerate diagram``): the evicted transactions, as chunks by fee rate, against the
   replacement alone. Core linearizes real clusters; each evicted transaction is its own chunk
   here (the same answer for the one-transaction clusters that channels make).

:func:`judge_replacement` raises :class:`BroadcastRejected` or returns what to evict.
"""

from __future__ import annotations

from fractions import Fraction

from bitcoin.core import CTransaction

from twisted_paychan.chain.embedded.mempool import Mempool, MempoolEntry, inputs_of
from twisted_paychan.chain.types import BroadcastRejected, OutPoint, RejectKind, display_hex
from twisted_paychan.rpc.errors import RPC_VERIFY_REJECTED

#: Core's ``MAX_REPLACEMENT_CANDIDATES``: more evictions than this and the replacement is refused.
MAX_REPLACEMENT_CANDIDATES = 100


def format_money(sats: int) -> str:
    """Core's ``FormatMoney``: BTC with trailing zeros dropped, at least two decimals."""
    text = f"{sats // 100_000_000}.{sats % 100_000_000:08d}"
    while text.endswith("0") and len(text.split(".")[1]) > 2:
        text = text[:-1]
    return text


def _refuse(reason: str, kind: RejectKind) -> BroadcastRejected:
    return BroadcastRejected(reason, RPC_VERIFY_REJECTED, kind)


def originals(mempool: Mempool, conflicts: set[bytes]) -> list[MempoolEntry]:
    """The directly conflicting transactions and their mempool descendants."""
    found: dict[bytes, MempoolEntry] = {}
    pending = list(conflicts)
    while pending:
        txid = pending.pop()
        entry = mempool.get(txid)
        if entry is None or txid in found:
            continue
        found[txid] = entry
        for index in range(len(entry.tx.vout)):
            child = mempool.spends.get(OutPoint(txid, index))
            if child is not None:
                pending.append(child)
    return list(found.values())


def _diagram(chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cumulative (size, fee) points of chunks taken best fee rate first."""
    points = [(0, 0)]
    for size, fee in sorted(chunks, key=lambda c: Fraction(c[1], max(c[0], 1)), reverse=True):
        last_size, last_fee = points[-1]
        points.append((last_size + size, last_fee + fee))
    return points


def _fee_at(diagram: list[tuple[int, int]], size: int) -> Fraction:
    for (s0, f0), (s1, f1) in zip(diagram, diagram[1:]):
        if size <= s1:
            return Fraction(f0) + Fraction(f1 - f0) * Fraction(size - s0, max(s1 - s0, 1))
    return Fraction(diagram[-1][1])


def improves_diagram(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> bool:
    """Whether the diagram of ``new`` chunks is nowhere below that of ``old`` and somewhere
    above (Core's ``CompareChunks`` strictly greater)."""
    a, b = _diagram(old), _diagram(new)
    sizes = sorted({s for s, _ in a} | {s for s, _ in b})
    better = False
    for size in sizes:
        fa, fb = _fee_at(a, size), _fee_at(b, size)
        if fb < fa:
            return False
        better = better or fb > fa
    return better


def judge_replacement(txid: bytes, tx: CTransaction, fee: int, vsize: int, conflicts: set[bytes],
                      mempool: Mempool, min_relay_fee_rate: int) -> list[bytes]:
    """The txids ``tx`` evicts, or :class:`BroadcastRejected` with Core 31's reason.
    ``min_relay_fee_rate`` is in sat/kvB."""
    shown = display_hex(txid)
    evicted = originals(mempool, conflicts)
    if len(evicted) > MAX_REPLACEMENT_CANDIDATES:
        raise _refuse(f"too many potential replacements, rejecting replacement {shown}; too many potential "
                      f"replacements ({len(evicted)} > {MAX_REPLACEMENT_CANDIDATES})", RejectKind.CONFLICT)
    evicted_ids = {e.txid for e in evicted}
    for point in inputs_of(tx):
        if point.txid in evicted_ids:
            raise _refuse(f"bad-txns-spends-conflicting-tx, {shown} spends conflicting transaction "
                          f"{display_hex(point.txid)}", RejectKind.INVALID)
    original_fees = sum(e.fee for e in evicted)
    if fee < original_fees:
        raise _refuse(f"insufficient fee, rejecting replacement {shown}, less fees than conflicting txs; "
                      f"{format_money(fee)} < {format_money(original_fees)}", RejectKind.FEE_TOO_LOW)
    additional = fee - original_fees
    relay = min_relay_fee_rate * vsize // 1000
    if additional < relay:
        raise _refuse(f"insufficient fee, rejecting replacement {shown}, not enough additional fees to relay; "
                      f"{format_money(additional)} < {format_money(relay)}", RejectKind.FEE_TOO_LOW)
    if not improves_diagram([(e.vsize, e.fee) for e in evicted], [(vsize, fee)]):
        raise _refuse("replacement-failed, insufficient feerate: does not improve feerate diagram",
                      RejectKind.FEE_TOO_LOW)
    return [e.txid for e in evicted]


__all__ = ["MAX_REPLACEMENT_CANDIDATES", "judge_replacement", "improves_diagram", "originals", "format_money"]
