"""
A stored client channel's life after the handshake, as a sans-IO machine: the client always
gets its money back (PROTOCOL.md §10.3, §11.1, with the specification's recommendations).

The machine takes typed events (the channel loaded, its refund due, a block, a spend of the
contract output, the server's settlement in its CLOSE, the answers to its own effects) and
returns typed effects (persist a transition by compare-and-set, broadcast, arm a timer, watch
an outpoint, notify the application). It holds no clock, no store and no chain: the
``ClientChannelManager`` (``net/client_manager.py``) carries the effects out and feeds the
answers back.

What happens to a stored channel, in one table (``LIFECYCLE``): a settlement seen in the
server's CLOSE or on the chain ends it SETTLED (checked to pay our change when it comes from
the chain, §1.4); from ``expiry + 300`` on (``constants.CLIENT_REFUND_DELAY``) it is EXPIRING,
and the contract (in case the server never broadcast it) and the refund are broadcast, again
on every block until the node takes the refund (non-final until the median time past passes
its lock time, BIP 113); the refund confirming ends it REFUNDED. Nothing ends before a spend of
the contract is seen, and the output stays watched until that spend confirms. A channel paid
down to zero whose connection ended without the server's settlement (stock bitcoinj loses its
CLOSE, §7.3 step 4) stays OPEN with a note (``EXHAUSTED_NOTE``) while the settlement is awaited
from the chain; the settlement, or else the refund, ends it as above. A new channel whose
opening failed after its contract left, the contract unknown to the node, is FAILED once the
transaction spending the contract's inputs back to the wallet is taken (``OpeningFailed``,
``net/failed_opening.py``).

Refusals are judged by ``BroadcastRejected.kind`` (``RejectKind``), never by their words.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Union

from twisted_paychan import constants as C
from twisted_paychan.chain.types import OutPoint, RejectKind
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState
from twisted_paychan.channel.validation import settlement_pays_change

S = ClientChannelState


class Trigger(enum.Enum):
    """What moves a stored client channel from one state to another."""

    #: ``expiry + CLIENT_REFUND_DELAY`` has come: the refund is ours to broadcast.
    REFUND_DUE = "refund due"
    #: The server's CLOSE carried a settlement that spends the contract.
    SETTLEMENT_RECEIVED = "settlement in CLOSE"
    #: A spend of the contract output that is not our refund (mempool or block).
    SETTLEMENT_ON_CHAIN = "settlement on chain"
    #: Our refund confirmed.
    REFUND_CONFIRMED = "refund confirmed"
    #: The payment that left no change went out and the connection ended without the server's
    #: settlement (stock bitcoinj loses its CLOSE, §7.3 step 4, §1.4): the record notes that
    #: the settlement is awaited from the chain.
    EXHAUSTED = "exhausted, settlement awaited"
    #: The opening failed after the contract left, the contract was on no chain and in no
    #: mempool, and the transaction spending its inputs back to our wallet was taken.
    OPENING_FAILED = "opening failed, coins reclaimed"


#: Every state change of a stored client channel: (state, trigger) -> new state. A pair not
#: listed changes nothing (a late or repeated event). ``channel.states.CLIENT_TRANSITIONS``
#: is this table's edges (tests/channel/test_client_lifecycle.py checks they are equal).
LIFECYCLE: Mapping[tuple[ClientChannelState, Trigger], ClientChannelState] = {
    (S.OPEN, Trigger.REFUND_DUE): S.EXPIRING,
    (S.OPEN, Trigger.EXHAUSTED): S.OPEN,
    (S.OPEN, Trigger.SETTLEMENT_RECEIVED): S.SETTLED,
    (S.OPEN, Trigger.SETTLEMENT_ON_CHAIN): S.SETTLED,
    (S.OPEN, Trigger.REFUND_CONFIRMED): S.REFUNDED,
    (S.OPEN, Trigger.OPENING_FAILED): S.FAILED,
    (S.EXPIRING, Trigger.SETTLEMENT_RECEIVED): S.SETTLED,
    (S.EXPIRING, Trigger.SETTLEMENT_ON_CHAIN): S.SETTLED,
    (S.EXPIRING, Trigger.REFUND_CONFIRMED): S.REFUNDED,
    # A settlement seen in a mempool may be replaced by another spend before one confirms.
    (S.SETTLED, Trigger.SETTLEMENT_RECEIVED): S.SETTLED,
    (S.SETTLED, Trigger.SETTLEMENT_ON_CHAIN): S.SETTLED,
    (S.SETTLED, Trigger.REFUND_CONFIRMED): S.REFUNDED,
}

_FINISHED = (S.SETTLED, S.REFUNDED, S.FAILED)


class TxRole(enum.Enum):
    """Why a transaction is broadcast (its answer comes back with the same role)."""

    #: The contract again when the channel is loaded: the node may have lost its mempool.
    CONTRACT_ON_LOAD = "contract on load"
    #: The contract before the refund, in case the server never broadcast it.
    CONTRACT = "contract"
    REFUND = "refund"


# -- input events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The machine's first event: the stored record. ``refunds``: this process looks after the
    refund (``paychan watch``, a long-running client), not only after settlements."""

    record: ClientChannelRecord
    refunds: bool = True
    #: Offer the contract to the node again (on start: it may have lost its mempool).
    rebroadcast: bool = False


@dataclass(frozen=True)
class SettlementAwaited:
    """Our CLOSE, or the payment that exhausted the channel, ended in EOF (a stock bitcoinj
    server, §1.4): watch for the settlement on the chain, if the channel is not watched
    already. After exhaustion the open record is also noted (``EXHAUSTED_NOTE``) until the
    settlement, or the refund if the server never settles, ends it."""

    exhausted: bool = False
    now: int = 0


@dataclass(frozen=True)
class RefundDue:
    now: int


@dataclass(frozen=True)
class BlockConnected:
    now: int


@dataclass(frozen=True)
class ContractSpent:
    spending_tx: bytes
    confirmed: bool
    now: int
    #: c as stored when the spend was seen: payments lower it without the lifecycle (the
    #: connection's hot path), and the settlement must pay at least the latest one.
    client_change: Optional[int] = None


@dataclass(frozen=True)
class SettlementReceived:
    """The server's CLOSE carried this settlement (the connection machine checked it)."""

    tx: bytes
    now: int


@dataclass(frozen=True)
class OpeningFailed:
    """The opening failed after the contract left (``why``), and ``reclaim_tx``, spending the
    contract's inputs back to our wallet, was taken by the node (``net/failed_opening.py``)."""

    reclaim_tx: bytes
    why: str
    now: int


@dataclass(frozen=True)
class ContractStatus:
    """Answer to :class:`CheckContract`: whether the node knows the contract."""

    known: bool


@dataclass(frozen=True)
class BroadcastAccepted:
    role: TxRole


@dataclass(frozen=True)
class BroadcastRefused:
    role: TxRole
    kind: RejectKind
    reason: str


@dataclass(frozen=True)
class TransitionStored:
    """Answer to :class:`PersistTransition`: the record as stored."""

    record: ClientChannelRecord


@dataclass(frozen=True)
class TransitionConflict:
    """Answer to :class:`PersistTransition`: the store held another state (``actual``)."""

    actual: Optional[ClientChannelRecord]


@dataclass(frozen=True)
class TransitionFailed:
    """Answer to :class:`PersistTransition`: the write could not be made; retried later."""

    reason: str


Event = Union[
    Loaded, SettlementAwaited, RefundDue, BlockConnected, ContractSpent, SettlementReceived, OpeningFailed,
    ContractStatus,
    BroadcastAccepted, BroadcastRefused, TransitionStored, TransitionConflict, TransitionFailed,
]

#: Events from outside the machine's own effects: held while a transition is being stored, so
#: that every decision is taken on the stored record.
_EXTERNAL = (SettlementAwaited, RefundDue, BlockConnected, ContractSpent, SettlementReceived, OpeningFailed)

#: The note on an open record whose channel is paid down to zero, until it ends.
EXHAUSTED_NOTE = "exhausted: all paid; awaiting the server's settlement"


# -- notifications (what the application and the attached connection are told) ---------------


@dataclass(frozen=True)
class ChannelExpiring:
    contract_txid: bytes


@dataclass(frozen=True)
class ChannelSettled:
    contract_txid: bytes
    tx: bytes
    #: True when learned from the chain (a server that only closed the socket, §1.4).
    from_chain: bool
    #: Empty, or why the settlement is not what we signed (it does not pay our change).
    note: str


@dataclass(frozen=True)
class ChannelRefunded:
    contract_txid: bytes
    tx: bytes


@dataclass(frozen=True)
class ChannelFailed:
    """The opening failed; the contract's coins went back to the wallet by ``tx``."""

    contract_txid: bytes
    tx: bytes
    note: str


@dataclass(frozen=True)
class RefundBroadcast:
    contract_txid: bytes


@dataclass(frozen=True)
class BroadcastNotAccepted:
    """A contract or refund the node refused this time; retried on the next block."""

    contract_txid: bytes
    role: TxRole
    kind: RejectKind
    reason: str


@dataclass(frozen=True)
class StoreTrouble:
    """A transition was not stored (a conflict or a failed write)."""

    contract_txid: bytes
    detail: str


ChannelEvent = Union[ChannelExpiring, ChannelSettled, ChannelRefunded, ChannelFailed, RefundBroadcast,
                     BroadcastNotAccepted, StoreTrouble]


# -- effects (a closed union; the manager dispatches on every one) ----------------------------


@dataclass(frozen=True)
class PersistTransition:
    """Compare-and-set the stored record from ``expected`` to ``new`` with ``changes`` (among
    note, close_tx, updated_at); answered by TransitionStored / TransitionConflict /
    TransitionFailed."""

    contract_txid: bytes
    expected: ClientChannelState
    new: ClientChannelState
    changes: Mapping[str, object] = field(hash=False)


@dataclass(frozen=True)
class Broadcast:
    """Answered by BroadcastAccepted / BroadcastRefused with the same role."""

    tx: bytes
    role: TxRole


@dataclass(frozen=True)
class CheckContract:
    """Ask the chain whether it knows the contract; answered by ContractStatus."""

    txid: bytes


@dataclass(frozen=True)
class ArmTimer:
    """Deliver RefundDue at ``at`` (seconds, the clock's epoch); replaces an armed timer."""

    at: int


@dataclass(frozen=True)
class CancelTimer:
    pass


@dataclass(frozen=True)
class WatchOutpoint:
    """Deliver ContractSpent for spends of ``outpoint`` (mempool and confirmed); BlockConnected
    for every block while the refund is due."""

    outpoint: OutPoint


@dataclass(frozen=True)
class Unwatch:
    outpoint: OutPoint


@dataclass(frozen=True)
class Notify:
    event: ChannelEvent


Effect = Union[PersistTransition, Broadcast, CheckContract, ArmTimer, CancelTimer, WatchOutpoint, Unwatch, Notify]


def settlement_note(spending_tx: bytes, record: ClientChannelRecord) -> str:
    """Empty when the settlement pays our change; otherwise what is wrong, for the record."""
    if settlement_pays_change(spending_tx, record.client_key, record.client_change):
        return ""
    return f"the transaction that closed the channel does not pay our change of {record.client_change} sat"


def refund_due_at(record: ClientChannelRecord) -> int:
    return record.expiry + C.CLIENT_REFUND_DELAY


class ClientLifecycle:
    """One stored client channel. Feed it events with :meth:`handle`; do the effects it returns
    in order and feed their answers back."""

    def __init__(self) -> None:
        self.record: Optional[ClientChannelRecord] = None
        #: This process broadcasts the refund when it is due.
        self.refunds = False
        #: The refund is due and no spend of the contract has been seen yet.
        self.refund_due = False
        #: A contract/refund broadcast is under way (one at a time, whatever the blocks do).
        self.attempting = False
        self.watching = False
        self.timer_armed = False
        #: The transition being stored and what to do once it is.
        self._pending: Optional[PersistTransition] = None
        self._after_stored: list[Effect] = []
        self._continue_attempt = False
        self._held: deque[Event] = deque()

    @property
    def idle(self) -> bool:
        """Nothing being stored and nothing held: every event so far has been absorbed."""
        return self._pending is None and not self._held

    @property
    def finished(self) -> bool:
        return self.record is not None and self.record.state in _FINISHED

    def handle(self, event: Event) -> list[Effect]:
        if self._pending is not None and isinstance(event, _EXTERNAL):
            self._held.append(event)
            return []
        out = self._handle(event)
        while self._pending is None and self._held:
            out += self._handle(self._held.popleft())
        return out

    def _handle(self, event: Event) -> list[Effect]:
        if isinstance(event, Loaded):
            return self._loaded(event)
        if self.record is None:
            raise AssertionError(f"{event!r} before Loaded")
        if isinstance(event, SettlementAwaited):
            if self.finished:
                return []
            out: list[Effect] = []
            if not self.watching:
                self.watching = True
                out.append(WatchOutpoint(OutPoint(self.record.contract_txid, 0)))
            if event.exhausted:
                out = self._move(Trigger.EXHAUSTED, event.now, note=EXHAUSTED_NOTE, then=[]) + out
            return out
        if isinstance(event, RefundDue):
            self.timer_armed = False
            if self.finished or not self.refunds:
                return []
            self.refund_due = True
            return self._attempt(event.now)
        if isinstance(event, BlockConnected):
            return self._attempt(event.now) if self.refund_due else []
        if isinstance(event, ContractSpent):
            return self._spent(event)
        if isinstance(event, SettlementReceived):
            return self._stop_refund() + self._move(
                Trigger.SETTLEMENT_RECEIVED, event.now, close_tx=event.tx, note="",
                then=[Notify(ChannelSettled(self.record.contract_txid, event.tx, False, ""))],
            )
        if isinstance(event, OpeningFailed):
            note = f"opening failed: {event.why}; contract never broadcast, coins reclaimed"
            out = self._stop_refund() + self._move(
                Trigger.OPENING_FAILED, event.now, close_tx=event.reclaim_tx, note=note,
                then=[Notify(ChannelFailed(self.record.contract_txid, event.reclaim_tx, note))])
            if out and self.watching:
                self.watching = False
                out.append(Unwatch(OutPoint(self.record.contract_txid, 0)))
            return out
        if isinstance(event, ContractStatus):
            if not self.attempting:
                return []
            return [Broadcast(self.record.refund if event.known else self.record.contract,
                              TxRole.REFUND if event.known else TxRole.CONTRACT)]
        if isinstance(event, BroadcastAccepted):
            return self._accepted(event.role)
        if isinstance(event, BroadcastRefused):
            return self._refused(event)
        if isinstance(event, TransitionStored):
            return self._stored(event.record)
        if isinstance(event, TransitionConflict):
            return self._conflict(event)
        if isinstance(event, TransitionFailed):
            return self._failed(event)
        raise AssertionError(f"unknown event {event!r}")

    # -- loading --------------------------------------------------------------------------------

    def _loaded(self, event: Loaded) -> list[Effect]:
        self.record = record = event.record
        if record.state in _FINISHED:
            return []  # a live machine watches its settlement until it confirms; a loaded one is done
        out: list[Effect] = []
        self.refunds = self.refunds or event.refunds
        if not self.watching and self.refunds:
            # Without refunds (``paychan pay``) the output is watched only once a settlement is
            # awaited from the chain (SettlementAwaited), as before.
            self.watching = True
            out.append(WatchOutpoint(OutPoint(record.contract_txid, 0)))
        if event.rebroadcast and record.state is S.OPEN:
            out.append(Broadcast(record.contract, TxRole.CONTRACT_ON_LOAD))
        if self.refunds and not self.timer_armed and not self.refund_due:
            self.timer_armed = True
            out.append(ArmTimer(refund_due_at(record)))
        return out

    # -- the refund ---------------------------------------------------------------------------

    def _attempt(self, now: int) -> list[Effect]:
        assert self.record is not None
        if self.attempting or self.finished:
            return []
        self.attempting = True
        if self.record.state is S.OPEN:
            self._continue_attempt = True
            return self._move(Trigger.REFUND_DUE, now,
                              then=[Notify(ChannelExpiring(self.record.contract_txid))])
        return [CheckContract(self.record.contract_txid)]

    def _accepted(self, role: TxRole) -> list[Effect]:
        assert self.record is not None
        if role is TxRole.CONTRACT_ON_LOAD or not self.attempting:
            return []
        if role is TxRole.CONTRACT:
            return [Broadcast(self.record.refund, TxRole.REFUND)]
        self.attempting = False
        return [Notify(RefundBroadcast(self.record.contract_txid))]

    def _refused(self, event: BroadcastRefused) -> list[Effect]:
        assert self.record is not None
        if event.kind is RejectKind.ALREADY_KNOWN:
            return self._accepted(event.role)  # the node has it: as good as accepted
        if event.role is TxRole.CONTRACT_ON_LOAD or not self.attempting:
            return []
        # Any other refusal ends this attempt; the next block tries again (the usual one is
        # NON_FINAL: the median time past has not reached the refund's lock time yet).
        self.attempting = False
        return [Notify(BroadcastNotAccepted(self.record.contract_txid, event.role, event.kind, event.reason))]

    def _stop_refund(self) -> list[Effect]:
        self.refund_due = False
        self.attempting = False  # answers to a broadcast under way are ignored from now on
        if self.timer_armed:
            self.timer_armed = False
            return [CancelTimer()]
        return []

    # -- outcomes -----------------------------------------------------------------------------

    def _spent(self, event: ContractSpent) -> list[Effect]:
        record = self.record
        assert record is not None
        if event.client_change is not None and event.client_change < record.client_change:
            self.record = record = replace(record, client_change=event.client_change)
        refund = event.spending_tx == record.refund
        if refund and not event.confirmed:
            return []  # our refund is in the mempool: wait for it to confirm
        out = self._stop_refund()
        if refund:
            out += self._move(Trigger.REFUND_CONFIRMED, event.now, close_tx=event.spending_tx, note="",
                              then=[Notify(ChannelRefunded(record.contract_txid, event.spending_tx))])
        else:
            note = settlement_note(event.spending_tx, record)
            out += self._move(Trigger.SETTLEMENT_ON_CHAIN, event.now, close_tx=event.spending_tx, note=note,
                              then=[Notify(ChannelSettled(record.contract_txid, event.spending_tx, True, note))])
        if event.confirmed and self.watching:
            self.watching = False
            out.append(Unwatch(OutPoint(record.contract_txid, 0)))
        return out

    # -- transitions --------------------------------------------------------------------------

    def _move(self, trigger: Trigger, now: int, then: list[Effect], **changes: object) -> list[Effect]:
        """The one place a state changes: by ``LIFECYCLE``, stored by compare-and-set."""
        record = self.record
        assert record is not None
        new = LIFECYCLE.get((record.state, trigger))
        if new is None:
            return []  # late or repeated: nothing to change
        if new is record.state and all(getattr(record, k) == v for k, v in changes.items()):
            return []  # already recorded
        effect = PersistTransition(record.contract_txid, record.state, new, {**changes, "updated_at": now})
        self._pending = effect
        self._after_stored = then
        return [effect]

    def _stored(self, record: ClientChannelRecord) -> list[Effect]:
        self.record = record
        self._pending = None
        out, self._after_stored = self._after_stored, []
        if self._continue_attempt:
            self._continue_attempt = False
            out = out + [CheckContract(record.contract_txid)]
        return out

    def _conflict(self, event: TransitionConflict) -> list[Effect]:
        assert self.record is not None
        pending, self._pending = self._pending, None
        self._after_stored = []
        self._continue_attempt = False
        self.attempting = False
        if event.actual is not None:
            self.record = event.actual
        out: list[Effect] = [Notify(StoreTrouble(self.record.contract_txid, f"stored state changed under us: "
                                                 f"expected {pending.expected.value if pending else '?'}, "
                                                 f"found {self.record.state.value}"))]
        if self.finished:
            out = self._stop_refund() + out
        return out

    def _failed(self, event: TransitionFailed) -> list[Effect]:
        assert self.record is not None
        self._pending = None
        self._after_stored = []
        self._continue_attempt = False
        self.attempting = False  # due stays set: the next block tries again
        return [Notify(StoreTrouble(self.record.contract_txid, event.reason))]
