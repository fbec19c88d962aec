"""
Plain values passed across the backend interfaces.

Transaction ids and block hashes are 32 bytes in **internal** byte order (as inside transactions)
everywhere in code; display order (reversed hex) appears only at the edges: logs, the command
line, JSON-RPC. :func:`display_hex` and :func:`from_display_hex` convert.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


def display_hex(h: bytes) -> str:
    """Internal-order hash -> the reversed hex that explorers, RPC and bitcoinj show."""
    return bytes(reversed(h)).hex()


def from_display_hex(s: str) -> bytes:
    """Display hex -> internal-order bytes; raises ValueError unless 64 hex digits."""
    raw = bytes.fromhex(s)
    if len(raw) != 32:
        raise ValueError(f"a transaction id or block hash is 32 bytes, got {len(raw)}")
    return bytes(reversed(raw))


@dataclass(frozen=True, order=True)
class OutPoint:
    txid: bytes  # internal order
    index: int

    def __str__(self) -> str:
        return f"{display_hex(self.txid)}:{self.index}"


class TxState(enum.Enum):
    UNKNOWN = "unknown"
    MEMPOOL = "mempool"
    CONFIRMED = "confirmed"


@dataclass(frozen=True)
class TxStatus:
    state: TxState
    confirmations: int = 0
    block_height: Optional[int] = None
    block_hash: Optional[bytes] = None


@dataclass(frozen=True)
class ChainTip:
    height: int
    block_hash: bytes
    #: The tip block's own timestamp.
    time: int
    #: BIP113 median of the last 11 block timestamps: what lock times are judged against.
    median_time_past: int


@dataclass(frozen=True)
class Utxo:
    outpoint: OutPoint
    value: int
    script_pubkey: bytes
    #: Height of the block that created it, or None while unconfirmed (in the mempool).
    height: Optional[int]
    coinbase: bool = False


@dataclass(frozen=True)
class SpendEvent:
    """An outpoint we watch was spent: by which transaction, and how far it is confirmed."""

    outpoint: OutPoint
    spending_txid: bytes
    spending_tx: bytes
    status: TxStatus


class BroadcastRejected(Exception):
    """The chain refused a transaction. ``reason`` is Bitcoin Core's reject reason where there
    is one (``bad-txns-inputs-missingorspent``, ``non-final``, ...), readable by a person;
    ``code`` is Bitcoin Core's RPC error code (-25, -26, -27) when known."""

    def __init__(self, reason: str, code: int = -26) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Balance:
    confirmed: int
    unconfirmed: int

    @property
    def total(self) -> int:
        return self.confirmed + self.unconfirmed


@dataclass(frozen=True)
class FundedTransaction:
    """A transaction paying ``amount`` to the requested script as output 0, fully signed."""

    tx: bytes
    txid: bytes
    fee: int
    #: Index of the wallet's change output, or None when no change was needed.
    change_index: Optional[int]
    spent: tuple[OutPoint, ...]
