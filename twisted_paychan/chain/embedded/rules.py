"""
What Bitcoin Core's ``sendrawtransaction`` checks before a transaction enters its mempool.

The kernel has no mempool and no transaction-acceptance API, so both chains we ship (the
in-memory double and the embedded regtest node) judge a broadcast here, with the same rules and
the same reject strings Bitcoin Core uses. A chain supplies what only it knows: the coin behind
each outpoint, which mempool transaction already spends it, and where the next block would be
(height, median-time-past). Script evaluation is Bitcoin Core's own interpreter via
:mod:`twisted_paychan.bitcoin.consensus`.

The checks run in Bitcoin Core's order (``PreChecks`` then the script checks), so the first
failure reported is the one Core would report. Not checked (see doc/chain.md): standard output
script types, sigop limits, package/ancestor limits, replace-by-fee, maximum fee rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from bitcoin.core import CTransaction, CTxOut

from twisted_paychan.bitcoin import consensus, policy
from twisted_paychan.bitcoin.transactions import virtual_size, weight
from twisted_paychan.chain.types import BroadcastRejected, OutPoint, RejectKind, Utxo
from twisted_paychan.constants import (
    COINBASE_MATURITY,
    DEFAULT_MIN_RELAY_TX_FEE,
    FINAL_SEQUENCE,
    LOCKTIME_THRESHOLD,
    MAX_MONEY,
)
from twisted_paychan.rpc.errors import RPC_DESERIALIZATION_ERROR, RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED

#: Largest standard transaction weight (MAX_STANDARD_TX_WEIGHT).
MAX_STANDARD_TX_WEIGHT = 400_000
#: Smallest transaction size without witness (MIN_STANDARD_TX_NONWITNESS_SIZE).
MIN_STANDARD_TX_NONWITNESS_SIZE = 65
#: Standard transaction versions (TX_MIN_STANDARD_VERSION .. TX_MAX_STANDARD_VERSION).
STANDARD_VERSIONS = (1, 2, 3)
#: Largest standard scriptSig (MAX_STANDARD_SCRIPTSIG_SIZE).
MAX_STANDARD_SCRIPTSIG_SIZE = 1650
#: Median of this many block timestamps is the median-time-past (BIP113).
MEDIAN_TIME_SPAN = 11

# BIP68 relative lock-time fields of nSequence.
_SEQUENCE_DISABLE_FLAG = 1 << 31
_SEQUENCE_TYPE_FLAG = 1 << 22
_SEQUENCE_MASK = 0x0000FFFF
_SEQUENCE_GRANULARITY = 9


def reject_missing() -> BroadcastRejected:
    """An input that is neither unspent in the chain nor created by the mempool: Core's -25."""
    return BroadcastRejected("bad-txns-inputs-missingorspent", RPC_VERIFY_ERROR, RejectKind.INPUTS_SPENT)


def reject(reason: str, kind: RejectKind = RejectKind.INVALID) -> BroadcastRejected:
    """Core's -26: refused by policy or consensus. Each check names its kind where it raises,
    so the kind never depends on how the reason is worded."""
    return BroadcastRejected(reason, RPC_VERIFY_REJECTED, kind)


def parse_transaction(raw: bytes) -> CTransaction:
    """Decode strictly (no trailing bytes), as ``sendrawtransaction`` does."""
    try:
        return CTransaction.deserialize(bytes(raw))
    except Exception as e:  # python-bitcoinlib raises several types on bad input
        raise BroadcastRejected(f"TX decode failed: {e}", RPC_DESERIALIZATION_ERROR, RejectKind.INVALID) from e


def median_time_past(times: Sequence[int]) -> int:
    """BIP113 median of the last (up to) 11 block timestamps, oldest first."""
    last = sorted(times[-MEDIAN_TIME_SPAN:])
    return last[len(last) // 2] if last else 0


def is_final(tx: CTransaction, block_height: int, block_time: int) -> bool:
    """Bitcoin Core's IsFinalTx: may ``tx`` be in a block at ``block_height`` whose lock-time
    clock (median-time-past of its parent, BIP113) reads ``block_time``?"""
    if tx.nLockTime == 0:
        return True
    limit = block_height if tx.nLockTime < LOCKTIME_THRESHOLD else block_time
    if tx.nLockTime < limit:
        return True
    return all(txin.nSequence == FINAL_SEQUENCE for txin in tx.vin)


def dust_threshold(txout: CTxOut) -> int:
    """Bitcoin Core's GetDustThreshold at the default dust relay fee: an output is dust when
    spending it would cost more than a third of its value (:func:`bitcoin.policy.dust_threshold`)."""
    return policy.dust_threshold(bytes(txout.scriptPubKey))


def check_transaction(tx: CTransaction) -> None:
    """Context-free checks (Core's CheckTransaction), then ``coinbase`` and standardness."""
    if not tx.vin:
        raise reject("bad-txns-vin-empty")
    if not tx.vout:
        raise reject("bad-txns-vout-empty")
    total = 0
    for txout in tx.vout:
        if txout.nValue < 0:
            raise reject("bad-txns-vout-negative")
        if txout.nValue > MAX_MONEY:
            raise reject("bad-txns-vout-toolarge")
        total += txout.nValue
        if total > MAX_MONEY:
            raise reject("bad-txns-txouttotal-toolarge")
    prevouts = [(txin.prevout.hash, txin.prevout.n) for txin in tx.vin]
    if len(set(prevouts)) != len(prevouts):
        raise reject("bad-txns-inputs-duplicate")
    if tx.is_coinbase():
        raise reject("coinbase")
    if any(txin.prevout.is_null() for txin in tx.vin):
        raise reject("bad-txns-prevout-null")
    # IsStandardTx, the parts that matter for what we build.
    if tx.nVersion not in STANDARD_VERSIONS:
        raise reject("version")
    if weight(tx) > MAX_STANDARD_TX_WEIGHT:
        raise reject("tx-size")
    for txin in tx.vin:
        script_sig = bytes(txin.scriptSig)
        if len(script_sig) > MAX_STANDARD_SCRIPTSIG_SIZE:
            raise reject("scriptsig-size")
        if not txin.scriptSig.is_push_only():
            raise reject("scriptsig-not-pushonly")
    if any(0 < dust_threshold(o) and o.nValue < dust_threshold(o) for o in tx.vout):
        raise reject("dust")
    if len(tx.serialize(dict(include_witness=False))) < MIN_STANDARD_TX_NONWITNESS_SIZE:
        raise reject("tx-size-small")


@dataclass(frozen=True)
class NextBlock:
    """Where a transaction accepted now would be mined: the lock-time context."""

    height: int
    #: Median-time-past of the current tip, the clock nLockTime is judged against (BIP113).
    median_time_past: int


def _check_sequence_locks(
    tx: CTransaction,
    coins: Sequence[Utxo],
    nxt: NextBlock,
    mtp_at: Callable[[int], int],
) -> None:
    """BIP68 relative lock times (transactions of version 2 and up)."""
    if tx.nVersion < 2:
        return
    min_height = -1
    min_time = -1
    for txin, coin in zip(tx.vin, coins):
        seq = txin.nSequence
        if seq & _SEQUENCE_DISABLE_FLAG:
            continue
        coin_height = nxt.height if coin.height is None else coin.height
        if seq & _SEQUENCE_TYPE_FLAG:
            coin_time = mtp_at(max(coin_height - 1, 0))
            min_time = max(min_time, coin_time + ((seq & _SEQUENCE_MASK) << _SEQUENCE_GRANULARITY) - 1)
        else:
            min_height = max(min_height, coin_height + (seq & _SEQUENCE_MASK) - 1)
    if min_height >= nxt.height or min_time >= nxt.median_time_past:
        raise reject("non-BIP68-final", RejectKind.NON_FINAL)


def check_scripts(raw: bytes, tx: CTransaction, coins: Sequence[Utxo]) -> None:
    """Every input through the judge; the reason says whether consensus or only policy failed."""
    for index, coin in enumerate(coins):
        try:
            if consensus.verify_input(raw, index, coin.script_pubkey, coin.value):
                continue
            consensus_ok = consensus.verify_input_consensus(raw, index, coin.script_pubkey, coin.value)
        except consensus.JudgeArgumentError as e:
            raise reject(f"mempool-script-verify-flag-failed ({e})") from e
        # Core 31 says mempool-script-verify-flag-failed for policy and consensus failures alike
        # (block-script-verify-flag-failed is for blocks); the detail says which it was here.
        if consensus_ok:
            raise reject(
                "mempool-script-verify-flag-failed "
                "(signature not strict DER, high S, or scriptSig not push-only)"
            )
        raise reject(f"mempool-script-verify-flag-failed (script evaluation failed on input {index})")


def check_acceptance(
    raw: bytes,
    tx: CTransaction,
    coin: Callable[[OutPoint], Optional[Utxo]],
    mempool_spender: Callable[[OutPoint], Optional[bytes]],
    nxt: NextBlock,
    mtp_at: Callable[[int], int],
    replace: Optional[Callable[[set[bytes], int, int], None]] = None,
) -> int:
    """Judge ``tx`` (already parsed from ``raw``) for the mempool; returns its fee.

    ``coin`` answers the unspent output behind an outpoint, from the chain or from a mempool
    parent (height None), or None if there is none; ``mempool_spender`` the txid of a mempool
    transaction already spending an outpoint. ``mtp_at(h)`` is the median-time-past of block
    ``h`` (for BIP68 time locks). Raises :class:`BroadcastRejected` with Core's reason.
    ``replace(conflicts, fee, vsize)`` judges a transaction that spends what mempool
    transactions spend, once its fee is known (``replacement.judge_replacement``, Core's full
    RBF); without it a conflict is refused (``txn-mempool-conflict``).
    """
    check_transaction(tx)
    if not is_final(tx, nxt.height, nxt.median_time_past):
        raise reject("non-final", RejectKind.NON_FINAL)
    outpoints = [OutPoint(bytes(txin.prevout.hash), txin.prevout.n) for txin in tx.vin]
    conflicts = {spender for outpoint in outpoints if (spender := mempool_spender(outpoint)) is not None}
    if conflicts and replace is None:
        raise reject("txn-mempool-conflict", RejectKind.CONFLICT)
    coins: list[Utxo] = []
    for outpoint in outpoints:
        found = coin(outpoint)
        if found is None:
            raise reject_missing()
        coins.append(found)
    _check_sequence_locks(tx, coins, nxt, mtp_at)
    value_in = 0
    for found in coins:
        if found.coinbase and found.height is not None and nxt.height - found.height < COINBASE_MATURITY:
            raise reject("bad-txns-premature-spend-of-coinbase", RejectKind.NON_FINAL)
        value_in += found.value
    value_out: int = sum(o.nValue for o in tx.vout)
    if value_in < value_out:
        raise reject("bad-txns-in-belowout")
    fee = value_in - value_out
    vsize = virtual_size(tx)
    min_fee = vsize * DEFAULT_MIN_RELAY_TX_FEE // 1000
    if fee < min_fee:
        raise reject(f"min relay fee not met, {fee} < {min_fee}", RejectKind.FEE_TOO_LOW)
    if conflicts and replace is not None:
        replace(conflicts, fee, vsize)
    check_scripts(raw, tx, coins)
    return fee
