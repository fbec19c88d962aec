"""
Transactions as bytes and as python-bitcoinlib objects, and bitcoinj's basic sanity check.

We use python-bitcoinlib's ``CTransaction`` as the transaction type throughout: its
(de)serialisation is correct for legacy and segwit forms, and its ``RawSignatureHash`` has been
checked against Bitcoin Core (shared notes, DEPENDENCIES.md §2). Only ``bitcoin.core`` is
imported, never ``bitcoin.wallet`` (which loads OpenSSL) nor its script interpreter.

:func:`check_transaction_sanity` is bitcoinj's ``Transaction.verify`` (PROTOCOL.md §5 step 5.3),
which the server applies to a PROVIDE_REFUND refund and a PROVIDE_CONTRACT contract.
"""

from __future__ import annotations

from typing import Any

from bitcoin.core import COutPoint, CScript, CTransaction, CTxIn, CTxOut

from twisted_paychan.constants import MAX_MONEY

__all__ = [
    "Transaction",
    "TransactionParseError",
    "TransactionSanityError",
    "compact_size",
    "parse_transaction",
    "serialize",
    "weight",
    "virtual_size",
    "make_transaction",
    "outpoint",
    "tx_input",
    "tx_output",
    "is_coinbase",
    "check_transaction_sanity",
]

#: python-bitcoinlib ships no type hints; this alias marks where a ``CTransaction`` goes.
Transaction = Any

#: bitcoinj ``Block.MAX_BLOCK_SIZE``: the largest transaction ``Transaction.verify`` accepts.
MAX_TRANSACTION_SIZE = 1_000_000

_NULL_TXID = b"\x00" * 32
_NULL_INDEX = 0xFFFFFFFF


class TransactionParseError(ValueError):
    """The bytes are not exactly one transaction."""


class TransactionSanityError(ValueError):
    """The transaction fails bitcoinj's ``Transaction.verify`` (``BAD_TRANSACTION``)."""


def compact_size(n: int) -> bytes:
    """Bitcoin's variable-length integer ("varint", CompactSize)."""
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def parse_transaction(raw: bytes) -> Transaction:
    """Parse one transaction, legacy or segwit serialisation; trailing bytes are an error.

    The contract may carry witness data when the client funded it from segwit coins (§2.6).
    """
    try:
        return CTransaction.deserialize(bytes(raw))
    except Exception as e:  # python-bitcoinlib raises several types for malformed input
        raise TransactionParseError(f"not a transaction: {e}") from e


def serialize(tx: Transaction, include_witness: bool = True) -> bytes:
    """The network serialisation (with witness data if the transaction has any, unless told
    not to: txids and legacy sighashes use the form without)."""
    if include_witness:
        return bytes(tx.serialize())
    return bytes(CTransaction(tx.vin, tx.vout, tx.nLockTime, tx.nVersion).serialize())


def weight(tx: Transaction) -> int:
    """BIP141 weight: the size without witness counts four times, the witness once."""
    stripped: bytes = tx.serialize(dict(include_witness=False))
    full: bytes = tx.serialize()
    return len(stripped) * 3 + len(full)


def virtual_size(tx: Transaction) -> int:
    """BIP141 virtual size: the weight over four, rounded up (what fee rates are paid on)."""
    return (weight(tx) + 3) // 4


def outpoint(txid: bytes, index: int) -> Any:
    """A ``COutPoint``; ``txid`` in internal byte order."""
    if len(txid) != 32:
        raise ValueError(f"a txid is 32 bytes, got {len(txid)}")
    return COutPoint(bytes(txid), index)


def tx_input(txid: bytes, index: int, sequence: int, script_sig: bytes = b"") -> Any:
    return CTxIn(outpoint(txid, index), CScript(script_sig), sequence)


def tx_output(value: int, script_pubkey: bytes) -> Any:
    return CTxOut(value, CScript(script_pubkey))


def make_transaction(
    inputs: list[Any], outputs: list[Any], lock_time: int = 0, version: int = 1
) -> Transaction:
    """An immutable ``CTransaction`` from ``CTxIn``/``CTxOut`` lists."""
    return CTransaction(inputs, outputs, lock_time, version)


def is_coinbase(tx: Transaction) -> bool:
    """bitcoinj's rule: exactly one input, and it spends the null outpoint."""
    if len(tx.vin) != 1:
        return False
    prev = tx.vin[0].prevout
    return bytes(prev.hash) == _NULL_TXID and prev.n == _NULL_INDEX


def check_transaction_sanity(tx: Transaction) -> None:
    """bitcoinj's ``Transaction.verify``, exactly; raise :class:`TransactionSanityError`.

    At least one input and one output; serialised size (witness included, as bitcoinj counts
    it) at most 1,000,000 bytes; no outpoint spent twice; no negative output; running output
    total never above 21·10^14 sat. A transaction whose only input spends the null outpoint is a
    coinbase and passes if that input's scriptSig is 2–100 bytes; otherwise any input spending
    the null outpoint is an error. (Channel code must still check that a refund spends the
    contract, which rules such a "coinbase" out.)
    """
    if not tx.vin or not tx.vout:
        raise TransactionSanityError("transaction has no inputs or no outputs")
    if len(serialize(tx)) > MAX_TRANSACTION_SIZE:
        raise TransactionSanityError("transaction is larger than 1000000 bytes")
    seen: set[tuple[bytes, int]] = set()
    for txin in tx.vin:
        key = (bytes(txin.prevout.hash), txin.prevout.n)
        if key in seen:
            raise TransactionSanityError("transaction spends the same outpoint twice")
        seen.add(key)
    total = 0
    for txout in tx.vout:
        if txout.nValue < 0:
            raise TransactionSanityError("transaction has a negative output")
        total += txout.nValue
        if total > MAX_MONEY:
            raise TransactionSanityError("transaction outputs exceed 21 million BTC")
    if is_coinbase(tx):
        if not 2 <= len(tx.vin[0].scriptSig) <= 100:
            raise TransactionSanityError("coinbase scriptSig is not 2-100 bytes")
    else:
        for txin in tx.vin:
            if bytes(txin.prevout.hash) == _NULL_TXID and txin.prevout.n == _NULL_INDEX:
                raise TransactionSanityError("transaction has an unexpected coinbase input")
