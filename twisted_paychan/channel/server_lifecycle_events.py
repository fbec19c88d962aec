"""
What the server lifecycle machine (``channel.server_lifecycle``) is told and what it asks for:
its input events and its effects, frozen values, each effect naming the event that reports its
outcome. ``LifecycleEvent`` and ``LifecycleEffect`` are the closed unions; the manager that runs
the machine dispatches on every effect (``mypy`` fails on a missing one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from twisted_paychan.chain.types import OutPoint, RejectKind, TxState
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.constants import FEE_RATE_FLOOR, SERVER_SETTLE_OFFSET


@dataclass(frozen=True)
class LifecyclePolicy:
    """The lifecycle's numbers (the fee rate and settle offset come from ``ServerSettings``)."""

    #: sat/kB of the server's settlements, before any bump (``ServerSettings.effective_fee_rate``).
    fee_rate: int = FEE_RATE_FLOOR
    #: Seconds before the expiry at which the server settles (§10.2).
    settle_offset: int = SERVER_SETTLE_OFFSET
    #: Seconds between retries of a settlement that failed (fee, broadcast).
    retry_interval: float = 600.0
    #: Seconds a contract may stay unconfirmed before its channel stops taking payments (§13 item 4).
    contract_confirm_timeout: float = 6 * 3600.0
    #: Confirmations after which a contract is taken as final and its inputs no longer watched.
    contract_final_depth: int = 6
    #: Seconds a CONTRACT_FAILED channel is kept after it failed before it is pruned, if the
    #: chain does not know its contract then (issue #14 item 3); and how often that is looked at.
    prune_after: float = 2 * 86400.0
    prune_interval: float = 3600.0
    #: Seconds between broadcasts of a contract that never reached a node (the node was down or
    #: refused our credentials): the channel stays OPEN, its contract pending, until one answers.
    contract_retry_interval: float = 30.0


# -- what the machine is told ------------------------------------------------------------------


class SettleBy(enum.Enum):
    """Who asked for a settlement: the client (CLOSE, or a payment that exhausted the channel),
    the operator, or the expiry timer. The server's own settlements (operator, expiry) may fall
    back to the floor fee rate; a client's gets the configured rate (§8.2 step 8)."""

    CLIENT = "client-requested-close"
    EXHAUSTED = "channel-exhausted"
    OPERATOR = "operator"
    EXPIRY = "expiry"


@dataclass(frozen=True)
class Loaded:
    """The channel was read from the store at start: rebroadcast, re-arm, watch."""


@dataclass(frozen=True)
class Created:
    """A connection stored this new channel: arm its timers, watch its contract."""


@dataclass(frozen=True)
class SettleDue:
    """The SETTLE timer fired: ``expiry - settle_offset``, or a retry."""


@dataclass(frozen=True)
class ConfirmationDue:
    """The CONFIRM timer fired: ``created_at + contract_confirm_timeout``."""


@dataclass(frozen=True)
class BlockConnected:
    height: int


@dataclass(frozen=True)
class ContractInputSpent:
    """One of the contract's inputs was spent, by the contract itself or by another transaction."""

    spending_txid: bytes
    confirmations: int


@dataclass(frozen=True)
class ContractSpent:
    """The contract's output 0 was spent (our settlement or the client's refund)."""

    spending_tx: bytes
    confirmed: bool


@dataclass(frozen=True)
class ContractRejected:
    """The node refused the contract when the opening connection broadcast it."""

    why: str


@dataclass(frozen=True)
class ContractUnsent:
    """The opening connection's broadcast of the contract never reached a node (connection
    refused, credentials refused, no answer): nothing was decided about the contract."""

    why: str


@dataclass(frozen=True)
class ContractRetryDue:
    """The CONTRACT_RETRY timer fired: offer the pending contract to the node again."""


@dataclass(frozen=True)
class SettleRequested:
    by: SettleBy


@dataclass(frozen=True)
class Stopped:
    """The server stops: every timer and watch goes (``Loaded`` brings them back). Not a
    decision about the channel, so not a row: handled the same in every state."""


# Completions: the outcome of the one effect outstanding.


@dataclass(frozen=True)
class TransitionStored:
    """``PersistTransition`` is durable; ``record`` is what the store now holds."""

    record: ServerChannelRecord


@dataclass(frozen=True)
class TransitionConflict:
    """``PersistTransition`` found another state; ``record`` is the store's record, read again."""

    record: ServerChannelRecord


@dataclass(frozen=True)
class SettlementBuilt:
    tx: bytes
    rate: int


@dataclass(frozen=True)
class SettlementUnaffordable:
    """b cannot pay the settlement's fee at any of the rates asked for; ``fee`` is what the
    cheapest of them would have cost, at ``rate`` sat/kB (None: not known)."""

    fee: Optional[int] = None
    rate: Optional[int] = None


@dataclass(frozen=True)
class BroadcastAccepted:
    what: "TxRole"


@dataclass(frozen=True)
class BroadcastRefused:
    what: "TxRole"
    kind: RejectKind
    reason: str


@dataclass(frozen=True)
class ContractStatusKnown:
    state: TxState


@dataclass(frozen=True)
class EffectFailed:
    """A write, build or query failed for a reason the machine has no row for (I/O, a bug)."""

    why: str


LifecycleEvent = Union[
    Loaded, Created, Stopped, SettleDue, ConfirmationDue, BlockConnected, ContractInputSpent, ContractSpent,
    ContractRejected, ContractUnsent, ContractRetryDue, SettleRequested, TransitionStored, TransitionConflict, SettlementBuilt,
    SettlementUnaffordable, BroadcastAccepted, BroadcastRefused, ContractStatusKnown, EffectFailed,
]

#: The events that report the outcome of the one effect outstanding.
COMPLETIONS = (TransitionStored, TransitionConflict, SettlementBuilt, SettlementUnaffordable, BroadcastAccepted,
                BroadcastRefused, ContractStatusKnown, EffectFailed)


# -- what the machine asks for -----------------------------------------------------------------


class TimerKind(enum.Enum):
    SETTLE = "settle"
    CONFIRM = "confirm"
    #: A contract that never reached a node is broadcast again (``contract_retry_interval``).
    CONTRACT_RETRY = "contract-retry"


class WatchKind(enum.Enum):
    #: The contract's inputs (a double spend fails the channel), until the contract is deep.
    INPUTS = "inputs"
    #: The contract's output 0 (settlement or refund), until the spend confirms.
    OUTPUT = "output"


class TxRole(enum.Enum):
    CONTRACT = "contract"
    SETTLEMENT = "settlement"


class ConnectionNews(enum.Enum):
    #: End the attached connection with a plain CLOSE (§10.2: before the expiry settlement).
    CLOSE = "close"
    #: Tell the attached connection's client the settlement (CLOSE{settlement}).
    SETTLED = "settled"


class ChannelEventKind(enum.Enum):
    OPENED = "opened"
    PAYMENT = "payment"
    CLOSED = "closed"
    SETTLING = "settling"
    SETTLED = "settled"
    STUCK = "stuck"
    REFUNDED = "refunded"
    CONTRACT_FAILED = "contract-failed"
    #: The contract's output was spent, in a mempool, by a transaction that is not our
    #: settlement (the client's refund): said once per spender, before it confirms.
    CONTRACT_SPENT = "contract-spent"


@dataclass(frozen=True)
class ChannelEvent:
    """What ``ServerChannelManager.subscribe`` callbacks hear."""

    kind: ChannelEventKind
    contract_txid: bytes
    note: str = ""
    #: PAYMENT: the increase and the new b.
    increase: int = 0
    total: int = 0


@dataclass(frozen=True)
class PersistTransition:
    """``store.transition_server(txid, expected, new, **changes)`` -> ``TransitionStored`` /
    ``TransitionConflict`` (record read again) / ``EffectFailed``."""

    expected: ServerChannelState
    new: ServerChannelState
    changes: Mapping[str, object]


@dataclass(frozen=True)
class BuildSettlement:
    """Build the settlement at the first of ``rates`` (sat/kB) that b can pay ->
    ``SettlementBuilt`` / ``SettlementUnaffordable`` / ``EffectFailed``."""

    rates: tuple[int, ...]


@dataclass(frozen=True)
class Broadcast:
    """-> ``BroadcastAccepted(what)`` / ``BroadcastRefused(what, kind, reason)``."""

    tx: bytes
    what: TxRole


@dataclass(frozen=True)
class Rebroadcast:
    """Offer a transaction to the node again (it may have lost its mempool); no outcome."""

    tx: bytes
    what: TxRole


@dataclass(frozen=True)
class QueryContractStatus:
    """-> ``ContractStatusKnown(state)`` / ``EffectFailed``."""


@dataclass(frozen=True)
class ArmTimer:
    """(Re)arm the channel's timer of this kind for the absolute time ``at``."""

    kind: TimerKind
    at: float


@dataclass(frozen=True)
class CancelTimer:
    kind: TimerKind


@dataclass(frozen=True)
class WatchOutpoints:
    """Watch these outpoints: INPUTS -> ``ContractInputSpent``, OUTPUT -> ``ContractSpent``."""

    kind: WatchKind
    outpoints: tuple[OutPoint, ...]


@dataclass(frozen=True)
class Unwatch:
    kind: WatchKind


@dataclass(frozen=True)
class TellConnection:
    """Tell the attached connection, if any, through its machine."""

    news: ConnectionNews
    settlement_tx: Optional[bytes] = None


@dataclass(frozen=True)
class SettleSucceeded:
    """The settlement is stored and the node has it: every requester gets ``tx``."""

    tx: bytes
    by: frozenset[SettleBy]


@dataclass(frozen=True)
class SettleFailed:
    """No settlement this time (the channel is kept, STUCK where it got that far)."""

    why: str
    unaffordable: bool
    #: The fee b could not pay, when that is why (``SettlementUnaffordable.fee``).
    fee: Optional[int] = None


@dataclass(frozen=True)
class NotifyApplication:
    event: ChannelEvent


LifecycleEffect = Union[
    PersistTransition, BuildSettlement, Broadcast, Rebroadcast, QueryContractStatus, ArmTimer, CancelTimer,
    WatchOutpoints, Unwatch, TellConnection, SettleSucceeded, SettleFailed, NotifyApplication,
]
