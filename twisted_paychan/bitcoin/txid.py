"""
Transaction ids in the two byte orders the protocol uses (PROTOCOL.md §4.10).

A channel is named by its contract's txid: the double SHA-256 of the serialisation *without*
witness data. Inside transactions (outpoints) and everywhere in our code it is kept in
**internal** order, the raw hash output. On the wire (``previous_channel_contract_hash``), in
bitcoinj's ``channelOpen(contractHash)`` and in explorers it is shown in **display** order, the
reverse. Convert only at those edges.
"""

from __future__ import annotations

import hashlib
from typing import Union

from twisted_paychan.bitcoin.transactions import Transaction, parse_transaction, serialize

__all__ = ["txid", "display_txid", "internal_from_display", "display_from_internal"]


def txid(tx: Union[Transaction, bytes]) -> bytes:
    """Internal-order txid of a ``CTransaction`` or of raw transaction bytes (witness or not)."""
    if isinstance(tx, (bytes, bytearray, memoryview)):
        tx = parse_transaction(bytes(tx))
    stripped = serialize(tx, include_witness=False)
    return hashlib.sha256(hashlib.sha256(stripped).digest()).digest()


def display_from_internal(internal: bytes) -> bytes:
    """Internal order -> display order (32 bytes reversed)."""
    if len(internal) != 32:
        raise ValueError(f"a txid is 32 bytes, got {len(internal)}")
    return bytes(reversed(internal))


def internal_from_display(display: bytes) -> bytes:
    """Display order (as on the wire in ``previous_channel_contract_hash``) -> internal order."""
    if len(display) != 32:
        raise ValueError(f"a txid is 32 bytes, got {len(display)}")
    return bytes(reversed(display))


def display_txid(tx: Union[Transaction, bytes]) -> str:
    """The hex txid explorers, RPC and bitcoinj's logs show."""
    return display_from_internal(txid(tx)).hex()
