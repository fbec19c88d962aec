"""
What each side must remember about a channel to never lose money (PROTOCOL.md §11).

Records are immutable values; a change is a new record (``dataclasses.replace``) handed to the
store. Hashes are internal-order bytes (``chain.types``). Private keys are not here: they stay in
the wallet, and records name keys by their public half.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class ServerChannelState(enum.Enum):
    #: Accepting payments (connected or not).
    OPEN = "open"
    #: Settlement built and broadcast, waiting for it to confirm.
    SETTLING = "settling"
    #: The settlement confirmed.
    SETTLED = "settled"
    #: Settlement cannot be made or broadcast yet (fee above b, rejected broadcast): kept and retried.
    STUCK = "stuck"
    #: The contract was double-spent or never confirmed; no more payments.
    CONTRACT_FAILED = "contract-failed"
    #: The client's refund confirmed instead of our settlement.
    REFUNDED = "refunded"


class ClientChannelState(enum.Enum):
    #: Usable: may be resumed and paid on.
    OPEN = "open"
    #: Past its expiry and not settled: the refund is due or broadcast.
    EXPIRING = "expiring"
    #: A settlement spending the contract was seen.
    SETTLED = "settled"
    #: Our refund confirmed.
    REFUNDED = "refunded"
    #: The opening failed after the contract left us, and the contract was neither on chain nor
    #: in a mempool: its inputs were spent back to our wallet (``close_tx``), the reason in
    #: ``note``. A late broadcast of the contract can never confirm.
    FAILED = "failed"


@dataclass(frozen=True)
class ServerChannelRecord:
    """The server's claim on a channel (bitcoinj ``StoredServerChannel``)."""

    contract_txid: bytes
    version: int
    contract: bytes
    #: V, the value of contract output 0.
    value: int
    #: E as the server sent it in INITIATE; for v2 the exact value in the redeem script.
    expiry: int
    #: K_S; the wallet holds its private key.
    server_key: bytes
    #: K_C exactly as the client sent it.
    client_key: bytes
    #: b, the best value to the server so far, and the client signature that pays it.
    best_value: int = 0
    best_signature: Optional[bytes] = None
    #: v1 only: the refund's single output, serialized; for information.
    client_output: Optional[bytes] = None
    state: ServerChannelState = ServerChannelState.OPEN
    #: Our settlement while we settle; once SETTLED or REFUNDED, the transaction that actually
    #: spent the contract, as the chain showed it (the client's refund, for a REFUNDED channel).
    settlement_tx: Optional[bytes] = None
    #: Why the channel is stuck or failed, for operators (``paychan channels``).
    note: str = ""
    created_at: int = 0
    updated_at: int = 0


@dataclass(frozen=True)
class ClientChannelRecord:
    """The client's side of a channel (bitcoinj ``StoredClientChannel``)."""

    contract_txid: bytes
    #: The 32-byte server id channels are grouped by (§9.1).
    server_id: bytes
    version: int
    contract: bytes
    #: The fully signed refund: stored before the contract leaves the client.
    refund: bytes
    client_key: bytes
    server_key: bytes
    #: V.
    value: int
    #: c, what goes back to the client in the latest payment; stored before it is sent.
    client_change: int
    #: E (both versions; the v1 refund's nLockTime equals it).
    expiry: int
    #: Contract fee + refund fee, for information.
    refund_fees: int = 0
    state: ClientChannelState = ClientChannelState.OPEN
    #: The transaction that closed the channel (settlement or refund), once seen.
    close_tx: Optional[bytes] = None
    note: str = ""
    created_at: int = 0
    updated_at: int = 0
