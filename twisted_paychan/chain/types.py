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
class BlockId:
    """A block of a chain by height and hash (a point a follower is synced to)."""

    height: int
    block_hash: bytes  # internal order


@dataclass(frozen=True)
class Utxo:
    outpoint: OutPoint
    value: int
    script_pubkey: bytes
    #: Height of the block that created it, or None while unconfirmed (in the mempool).
    height: Optional[int]
    coinbase: bool = False


@dataclass(frozen=True)
class OutputScan:
    """The confirmed unspent outputs paying some scripts, as of the block ``tip``."""

    utxos: list[Utxo]
    tip: BlockId


@dataclass(frozen=True)
class SpendEvent:
    """An outpoint we watch was spent: by which transaction, and how far it is confirmed."""

    outpoint: OutPoint
    spending_txid: bytes
    spending_tx: bytes
    status: TxStatus


class RejectKind(enum.Enum):
    """What a refused broadcast means for the caller, so that decisions (bump the fee, stop
    retrying, wait for a lock time) are taken on a kind, never on the words of a message."""

    #: Below the node's relay or mempool minimum, or too little to replace a conflict: pay more.
    FEE_TOO_LOW = "fee-too-low"
    #: An input is missing or already spent (in a block): retrying cannot help.
    INPUTS_SPENT = "inputs-spent"
    #: Spends the same outputs as a transaction in the mempool, which was not replaced.
    CONFLICT = "conflict"
    #: Not final yet (lock time, BIP 113 median time past, BIP 68 sequence): try again later.
    NON_FINAL = "non-final"
    #: The node already has it (mempool or chain): as good as accepted.
    ALREADY_KNOWN = "already-known"
    #: The node could not be asked (connection, credentials): nothing was decided.
    UNREACHABLE = "unreachable"
    #: Invalid or non-standard: the transaction itself is wrong.
    INVALID = "invalid"


#: Bitcoin Core's reject reasons (the token before any detail) by what they mean for us.
_REJECT_KINDS: dict[str, RejectKind] = {
    "min relay fee not met": RejectKind.FEE_TOO_LOW,
    "mempool min fee not met": RejectKind.FEE_TOO_LOW,
    "insufficient fee": RejectKind.FEE_TOO_LOW,
    "min-fee-not-met": RejectKind.FEE_TOO_LOW,
    "bad-txns-inputs-missingorspent": RejectKind.INPUTS_SPENT,
    "missing-inputs": RejectKind.INPUTS_SPENT,
    "Inputs missing or spent": RejectKind.INPUTS_SPENT,  # TransactionErrorString, code -25
    "Missing inputs": RejectKind.INPUTS_SPENT,  # the same before Core 0.21
    "txn-mempool-conflict": RejectKind.CONFLICT,
    "too many potential replacements": RejectKind.CONFLICT,
    "replacement-failed": RejectKind.FEE_TOO_LOW,  # Core 31: does not improve the feerate diagram
    "non-final": RejectKind.NON_FINAL,
    "non-BIP68-final": RejectKind.NON_FINAL,
    "bad-txns-premature-spend-of-coinbase": RejectKind.NON_FINAL,
    "txn-already-in-mempool": RejectKind.ALREADY_KNOWN,
    "txn-already-known": RejectKind.ALREADY_KNOWN,
    "Transaction already in block chain": RejectKind.ALREADY_KNOWN,
    "Transaction outputs already in utxo set": RejectKind.ALREADY_KNOWN,
}


def reject_kind(reason: str) -> RejectKind:
    """The kind of one of Bitcoin Core's reject reasons: its token is the text before the first
    comma or parenthesis (``min relay fee not met, 100 < 141``)."""
    token = reason.split(",", 1)[0].split(" (", 1)[0].strip()
    return _REJECT_KINDS.get(token, RejectKind.INVALID)


class BroadcastRejected(Exception):
    """The chain refused a transaction. ``reason`` is Bitcoin Core's reject reason where there
    is one (``bad-txns-inputs-missingorspent``, ``non-final``, ...), readable by a person;
    ``code`` is Bitcoin Core's RPC error code (-22, -25, -26, -27), or 0 when no node answered;
    ``kind`` is what it means for the caller. Every backend we ship passes the kind it knows
    (each check of the embedded rules names its own, ``RpcChain`` reads Core's code and reason);
    without one, it is classified from the reason's token."""

    def __init__(self, reason: str, code: int = -26, kind: Optional[RejectKind] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.kind = kind if kind is not None else reject_kind(reason)


def refusal(error: object) -> tuple[RejectKind, str]:
    """What a failed broadcast means and why: a ``BroadcastRejected`` says so itself; any other
    failure (a connection, a timeout) decided nothing about the transaction: ``UNREACHABLE``."""
    if isinstance(error, BroadcastRejected):
        return error.kind, error.reason
    return RejectKind.UNREACHABLE, str(error)


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
