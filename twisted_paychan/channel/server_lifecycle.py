"""
What happens to a stored server channel after its handshake, as a sans-IO machine.

One :class:`ServerLifecycle` per stored server record. Feed it what happened (the frozen
``*Event`` dataclasses below, with the time) and it returns the effects to carry out (the
``*Effect`` dataclasses; :data:`LifecycleEffect` is their closed union). It never touches the
store, the chain, the wallet or a clock: ``net.server_manager`` does, and feeds the outcome of
each effect that has one back in as an event.

Every decision is a row of :data:`LIFECYCLE_TABLE`, keyed by the channel's stored state and the
event, naming the states the row may write next. Read it to answer, for instance:

- *Who settles a channel before expiry?* ``(OPEN, SettleDue)``: the server's own timer, armed
  for ``expiry - settle_offset`` when the channel is stored or loaded (fired at once when that
  moment has passed), freezes the channel (``SETTLING``), builds, stores and broadcasts the
  settlement; a failure leaves it ``STUCK`` and the timer is armed again ``retry_interval``
  later.
- *What happens when the contract is double-spent?* ``(OPEN, ContractInputSpent)``: the
  channel becomes ``CONTRACT_FAILED`` (payments are refused from then on), its timers and
  watches are dropped.

Writes are compare-and-set (:class:`PersistTransition` names the state it expects). A write
that finds another state (:class:`TransitionConflict`, with the record read again) runs the
event that led to it once more, on the fresh record: the row for the new state decides.

Only one effect with an outcome (a write, a build, a broadcast, a status query) is outstanding
at a time; other events that arrive meanwhile wait and are handled, in order, once it is known.
A settlement requested while one is in progress joins it, and every requester hears its one
outcome (:class:`SettleSucceeded` / :class:`SettleFailed`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from twisted_paychan.bitcoin.transactions import TransactionParseError, parse_transaction
from twisted_paychan.chain.types import OutPoint, RejectKind, TxState, display_hex
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.constants import FEE_RATE_FLOOR
# The machine's vocabulary, re-exported: callers need one import.
from twisted_paychan.channel.server_lifecycle_events import (
    LifecyclePolicy, SettleBy, Loaded, Created, SettleDue, ConfirmationDue, BlockConnected,
    ContractInputSpent, ContractSpent, ContractRejected, ContractUnsent, ContractRetryDue, SettleRequested,
    Stopped, TransitionStored,
    TransitionConflict, SettlementBuilt, SettlementUnaffordable, BroadcastAccepted, BroadcastRefused,
    ContractStatusKnown, EffectFailed, TimerKind, WatchKind, TxRole, ConnectionNews, ChannelEventKind,
    ChannelEvent, PersistTransition, BuildSettlement, Broadcast, Rebroadcast, QueryContractStatus, ArmTimer,
    CancelTimer, WatchOutpoints, Unwatch, TellConnection, SettleSucceeded, SettleFailed, NotifyApplication,
    LifecycleEvent, LifecycleEffect, COMPLETIONS,
)

__all__ = [
    "LifecyclePolicy", "SettleBy", "Loaded", "Created", "SettleDue", "ConfirmationDue", "BlockConnected",
    "ContractInputSpent", "ContractSpent", "ContractRejected", "ContractUnsent", "ContractRetryDue",
    "SettleRequested", "Stopped",
    "TransitionStored", "TransitionConflict", "SettlementBuilt", "SettlementUnaffordable",
    "BroadcastAccepted", "BroadcastRefused", "ContractStatusKnown", "EffectFailed", "TimerKind",
    "WatchKind", "TxRole", "ConnectionNews", "ChannelEventKind", "ChannelEvent", "PersistTransition",
    "BuildSettlement", "Broadcast", "Rebroadcast", "QueryContractStatus", "ArmTimer", "CancelTimer",
    "WatchOutpoints", "Unwatch", "TellConnection", "SettleSucceeded", "SettleFailed", "NotifyApplication",
    "LifecycleEvent", "LifecycleEffect", "FINAL_STATES", "LIFECYCLE_TABLE", "Rule", "ServerLifecycle",
    "lifecycle_edges", "CONTRACT_REJECTED_NOTE", "CONTRACT_PENDING_NOTE", "never_accepted",
]

S = ServerChannelState

#: States a channel never leaves.
FINAL_STATES = frozenset({S.SETTLED, S.REFUNDED})

#: How the note of a channel whose contract the node refused at its first broadcast begins.
CONTRACT_REJECTED_NOTE = "contract rejected by the node"
#: How the note of an OPEN channel begins while its contract has reached no node (kept across a
#: restart: a loaded channel with this note goes on retrying, not resumable meanwhile).
CONTRACT_PENDING_NOTE = "contract pending: the node was unavailable"


def never_accepted(record: ServerChannelRecord) -> bool:
    """The channel failed because the node refused its contract at the first broadcast, before
    CHANNEL_OPEN: it never took a payment beyond the contract's initial one (a channel whose
    contract was double-spent or never confirmed may have, and is not this)."""
    return record.state is S.CONTRACT_FAILED and record.note.startswith(CONTRACT_REJECTED_NOTE + ":")


#: The event the subscribers hear when a channel enters each state.
_ENTERED: Mapping[ServerChannelState, ChannelEventKind] = {
    S.SETTLING: ChannelEventKind.SETTLING,
    S.STUCK: ChannelEventKind.STUCK,
    S.SETTLED: ChannelEventKind.SETTLED,
    S.REFUNDED: ChannelEventKind.REFUNDED,
    S.CONTRACT_FAILED: ChannelEventKind.CONTRACT_FAILED,
}


class _Awaiting(enum.Enum):
    WRITE = "write"
    BUILD = "build"
    BROADCAST = "broadcast"
    STATUS = "status"


@dataclass
class _Settlement:
    """A settlement in progress: who asked."""

    by: set[SettleBy] = field(default_factory=set)

    @property
    def floor(self) -> bool:
        return bool(self.by & {SettleBy.OPERATOR, SettleBy.EXPIRY})


Effects = list[LifecycleEffect]
_Then = Callable[[float], Effects]


class ServerLifecycle:
    """One stored server channel after its handshake. See the module docstring."""

    #: Conflicts in a row after which a decision is given up (another writer keeps winning).
    MAX_CONFLICTS = 3

    # One per open channel, mostly idle: slots, and a list for the (rare) held events.
    __slots__ = ("_record", "_policy", "_awaiting", "_held", "_timers", "_watches", "_bumps", "_settling", "_rule",
                 "_origin", "_then", "_conflicts", "_bumped_for", "_spender_told")

    def __init__(self, record: ServerChannelRecord, policy: LifecyclePolicy) -> None:
        self._record = record
        self._policy = policy
        self._awaiting: Optional[_Awaiting] = None
        self._held: list[LifecycleEvent] = []
        self._timers: set[TimerKind] = set()
        self._watches: set[WatchKind] = set()
        #: Settlements the node refused as too cheap: how many times to double the fee rate.
        self._bumps = 0
        #: The refusal counted in ``_bumps`` last (decided again after a conflict, it counts once).
        self._bumped_for: Optional[BroadcastRefused] = None
        self._settling: Optional[_Settlement] = None
        #: The row deciding now, and the event it decides on (run again after a conflict).
        self._rule: Optional[Rule] = None
        self._origin: Optional[LifecycleEvent] = None
        self._then: Optional[_Then] = None
        self._conflicts = 0
        #: The spender of the contract output last told to the application (told once each).
        self._spender_told: Optional[bytes] = None

    @property
    def record(self) -> ServerChannelRecord:
        """The record as this machine last knew it stored (b may be behind: payments go to the
        store directly, and every settlement is built from the record its freeze returned)."""
        return self._record

    @property
    def state(self) -> ServerChannelState:
        return self._record.state

    @property
    def contract_pending(self) -> bool:
        """The contract has not reached a node yet (its broadcast is retried): the channel is
        stored OPEN but not resumable until the node has it."""
        if self._record.state is not S.OPEN:
            return False
        noted = self._record.note.startswith(CONTRACT_PENDING_NOTE)
        return noted or self._awaiting is _Awaiting.BROADCAST or TimerKind.CONTRACT_RETRY in self._timers

    @property
    def settling(self) -> bool:
        return self._settling is not None

    def settle_at(self) -> int:
        return self._record.expiry - self._policy.settle_offset

    # -- input ----------------------------------------------------------------------------------

    def handle(self, event: LifecycleEvent, now: float) -> Effects:
        """What to do about ``event`` at time ``now``."""
        if isinstance(event, Stopped):
            return ([CancelTimer(kind) for kind in sorted(self._timers, key=lambda k: k.value)]
                    + [Unwatch(kind) for kind in sorted(self._watches, key=lambda k: k.value)]
                    + self._forget_io())
        if isinstance(event, COMPLETIONS):
            if self._awaiting is None:
                return []  # nothing outstanding: a stale outcome
            self._awaiting = None
            out = self._complete(event, now)
        elif self._awaiting is not None:
            if isinstance(event, SettleRequested) and self._settling is not None:
                self._settling.by.add(event.by)  # joins the settlement in progress
            else:
                self._held.append(event)
            return []
        else:
            out = self._decide(event, now)
        while self._held and self._awaiting is None:
            out += self._decide(self._held.pop(0), now)
        return out

    def _decide(self, event: LifecycleEvent, now: float) -> Effects:
        rule = LIFECYCLE_TABLE.get((self._record.state, type(event)))
        if rule is None:
            return self._unhandled(event, now)
        self._rule, self._origin = rule, event
        return rule.handler(self, event, now)

    def _unhandled(self, event: LifecycleEvent, now: float) -> Effects:
        """No row: the event means nothing in this state, unless a settlement waits on it."""
        if self._settling is not None and isinstance(event, COMPLETIONS + (SettleRequested,)):
            return self._end_settlement(now, why=f"the channel is {self._record.state.value}")
        if isinstance(event, SettleRequested):
            return [SettleFailed(f"the channel is {self._record.state.value}", unaffordable=False)]
        return []

    def _complete(self, event: LifecycleEvent, now: float) -> Effects:
        if isinstance(event, TransitionStored):
            return self._stored(event.record, now)
        if isinstance(event, TransitionConflict):
            return self._conflict(event.record, now)
        if isinstance(event, EffectFailed):
            self._then = None
            if self._settling is not None:
                return self._end_settlement(now, why=event.why)
            return []
        return self._decide(event, now)

    # -- writes ----------------------------------------------------------------------------------

    def _persist(self, new: ServerChannelState, then: _Then, **changes: object) -> Effects:
        rule = self._rule
        assert rule is not None and new in rule.writes, f"{self._record.state} -> {new} is not in this row"
        self._awaiting, self._then = _Awaiting.WRITE, then
        return [PersistTransition(self._record.state, new, changes)]

    def _stored(self, record: ServerChannelRecord, now: float) -> Effects:
        old, self._record, self._conflicts = self._record.state, record, 0
        then, self._then = self._then, None
        out: Effects = []
        if record.state is not old:
            if old is S.OPEN:
                out += (self._cancel(TimerKind.CONFIRM) + self._cancel(TimerKind.CONTRACT_RETRY)
                        + self._unwatch(WatchKind.INPUTS))
            if record.state in FINAL_STATES:
                out += (self._cancel(TimerKind.SETTLE) + self._cancel(TimerKind.CONFIRM)
                        + self._unwatch(WatchKind.INPUTS) + self._unwatch(WatchKind.OUTPUT))
            out.append(NotifyApplication(ChannelEvent(_ENTERED[record.state], record.contract_txid, record.note)))
        if then is not None:
            out += then(now)
        return out

    def _conflict(self, record: ServerChannelRecord, now: float) -> Effects:
        """Another writer moved the channel first: decide again on what is stored now."""
        self._record, self._then = record, None
        self._conflicts += 1
        origin = self._origin
        if origin is None or self._conflicts > self.MAX_CONFLICTS:
            self._conflicts = 0
            return self._end_settlement(now, why="the stored channel keeps changing") if self._settling else []
        if isinstance(origin, COMPLETIONS):
            # The outcome (a built settlement, a broadcast) still holds; the row for the fresh
            # state decides what it means now.
            return self._decide(origin, now)
        if isinstance(origin, SettleRequested | SettleDue) and self._settling is not None:
            rule = LIFECYCLE_TABLE.get((record.state, SettleRequested))
            if rule is None:
                return self._end_settlement(now, why=f"the channel is {record.state.value}")
            self._rule = rule
            return self._settle_step(now)
        return self._decide(origin, now)

    # -- timers and watches ---------------------------------------------------------------------

    def _arm(self, kind: TimerKind, at: float) -> Effects:
        self._timers.add(kind)
        return [ArmTimer(kind, at)]

    def _cancel(self, kind: TimerKind) -> Effects:
        if kind not in self._timers:
            return []
        self._timers.discard(kind)
        return [CancelTimer(kind)]

    def _watch(self, kind: WatchKind) -> Effects:
        if kind in self._watches:
            return []
        self._watches.add(kind)
        r = self._record
        if kind is WatchKind.OUTPUT:
            points: tuple[OutPoint, ...] = (OutPoint(r.contract_txid, 0),)
        else:
            points = tuple(OutPoint(bytes(i.prevout.hash), i.prevout.n) for i in parse_transaction(r.contract).vin)
        return [WatchOutpoints(kind, points)]

    def _unwatch(self, kind: WatchKind) -> Effects:
        if kind not in self._watches:
            return []
        self._watches.discard(kind)
        return [Unwatch(kind)]

    def _forget_io(self) -> Effects:
        self._timers.clear()
        self._watches.clear()
        return []

    def _fired(self, kind: TimerKind) -> bool:
        """A timer event counts only if the timer is still armed (not cancelled meanwhile)."""
        if kind not in self._timers:
            return False
        self._timers.discard(kind)
        return True

    # -- the rows' handlers ------------------------------------------------------------------------

    def _open_watched(self, event: LifecycleEvent, now: float) -> Effects:
        """Watch the contract's inputs (until 6 deep) and output; arm CONFIRM (created + 6 h) and SETTLE
        (expiry - settle_offset). Loaded: rebroadcast the contract first, or, if it never reached
        a node, go on retrying it (its outcome decides, as before the restart)."""
        r = self._record
        out: Effects = []
        if isinstance(event, Loaded):
            if r.note.startswith(CONTRACT_PENDING_NOTE):
                out = self._arm(TimerKind.CONTRACT_RETRY, now)
            else:
                out = [Rebroadcast(r.contract, TxRole.CONTRACT)]
        return (out + self._watch(WatchKind.INPUTS) + self._watch(WatchKind.OUTPUT)
                + self._arm(TimerKind.CONFIRM, r.created_at + self._policy.contract_confirm_timeout)
                + self._arm(TimerKind.SETTLE, self.settle_at()))

    def _settling_loaded(self, event: LifecycleEvent, now: float) -> Effects:
        """A node loses its mempool in a crash: put back what this channel depends on."""
        r = self._record
        out: Effects = [Rebroadcast(r.contract, TxRole.CONTRACT)]
        if r.settlement_tx is not None:
            out.append(Rebroadcast(r.settlement_tx, TxRole.SETTLEMENT))
        else:  # a crash between the freeze and the stored settlement: finish it
            out += self._arm(TimerKind.SETTLE, self.settle_at())
        return out + self._watch(WatchKind.OUTPUT)

    def _stuck_loaded(self, event: LifecycleEvent, now: float) -> Effects:
        """Stuck at start: rebroadcast the contract, follow its output, retry the settlement (at once if due)."""
        return ([Rebroadcast(self._record.contract, TxRole.CONTRACT)] + self._watch(WatchKind.OUTPUT)
                + self._arm(TimerKind.SETTLE, self.settle_at()))

    def _settle(self, event: LifecycleEvent, now: float) -> Effects:
        """Settle: asked by the client or the operator, or by the SETTLE timer (expiry - settle_offset; a
        connected client gets a plain CLOSE first). OPEN and CONTRACT_FAILED are frozen (SETTLING) first."""
        out: Effects = []
        if isinstance(event, SettleDue):
            if not self._fired(TimerKind.SETTLE):
                return []
            by = SettleBy.EXPIRY
            out.append(TellConnection(ConnectionNews.CLOSE))  # a connected client gets a plain CLOSE first
        else:
            assert isinstance(event, SettleRequested)
            by = event.by
        self._settling = self._settling or _Settlement()
        self._settling.by.add(by)
        if self._record.best_signature is None:
            # Nothing was ever paid: nothing to settle.
            return out + self._end_settlement(now, why="nothing was paid on this channel", unaffordable=True,
                                              retry=False)
        return out + self._settle_step(now)

    def _settle_step(self, now: float) -> Effects:
        """The next step of the settlement in progress, from what is stored."""
        r = self._record
        if r.state in (S.OPEN, S.CONTRACT_FAILED):
            # Freeze first: payments stored before this are in the record the write returns,
            # payments after it are refused, so the settlement pays every acknowledged payment.
            return self._persist(S.SETTLING, self._settle_step, note="settling", updated_at=int(now))
        if r.state in FINAL_STATES:
            return self._end_settlement(now, why=f"the channel is {r.state.value}")
        if r.settlement_tx is None or self._bumps:
            self._awaiting = _Awaiting.BUILD
            return [BuildSettlement(self._rates())]
        self._awaiting = _Awaiting.STATUS  # the settlement spends the contract: is it known?
        return [QueryContractStatus()]

    def _rates(self) -> tuple[int, ...]:
        """The configured rate doubled once per FEE_TOO_LOW refusal; a first settlement of the
        server's own (expiry, operator) may fall back to the floor, so the server gets what it
        can before the client's refund takes everything."""
        rate = self._policy.fee_rate * 2 ** self._bumps
        assert self._settling is not None
        if self._settling.floor and not self._bumps and rate > FEE_RATE_FLOOR:
            return (rate, FEE_RATE_FLOOR)
        return (rate,)

    def _settlement_built(self, event: LifecycleEvent, now: float) -> Effects:
        """Store the settlement (state SETTLING) before it is broadcast."""
        assert isinstance(event, SettlementBuilt)
        # Stored before it is broadcast.
        return self._persist(S.SETTLING, self._query_contract, settlement_tx=event.tx, note="", updated_at=int(now))

    def _query_contract(self, now: float) -> Effects:
        self._awaiting = _Awaiting.STATUS
        return [QueryContractStatus()]

    def _settlement_unaffordable(self, event: LifecycleEvent, now: float) -> Effects:
        """b cannot pay the fee: keep a stored settlement, else STUCK (retried later)."""
        if self._record.settlement_tx is not None:
            return self._query_contract(now)  # a bump b cannot pay: the stored settlement stands
        assert isinstance(event, SettlementUnaffordable)
        b = self._record.best_value
        if event.fee is not None:
            note = (f"settlement fee {event.fee} sat (at {event.rate} sat/kB) exceeds the {b} sat the channel "
                    f"pays the server")
        else:
            note = "settlement fee exceeds what the channel pays the server, even at the minimum fee rate"
        fee = event.fee
        return self._persist(S.STUCK, lambda now: self._end_settlement(now, why=note, unaffordable=True, fee=fee),
                             settlement_tx=None, note=note, updated_at=int(now))

    def _contract_status_for_settlement(self, event: LifecycleEvent, now: float) -> Effects:
        """Broadcast the settlement, giving the node back a contract it forgot first."""
        assert isinstance(event, ContractStatusKnown) and self._settling is not None
        self._awaiting = _Awaiting.BROADCAST
        if event.state is TxState.UNKNOWN:  # the node forgot an unconfirmed contract: give it back first
            return [Broadcast(self._record.contract, TxRole.CONTRACT)]
        assert self._record.settlement_tx is not None
        return [Broadcast(self._record.settlement_tx, TxRole.SETTLEMENT)]

    def _settlement_broadcast(self, event: LifecycleEvent, now: float) -> Effects:
        """Accepted: SETTLING, requesters told. Refused: STUCK with the reason (FEE_TOO_LOW: twice the rate next time)."""
        assert isinstance(event, (BroadcastAccepted, BroadcastRefused))
        tx = self._record.settlement_tx
        assert tx is not None
        if event.what is TxRole.CONTRACT:  # accepted or not, the settlement goes next
            self._awaiting = _Awaiting.BROADCAST
            return [Broadcast(tx, TxRole.SETTLEMENT)]
        if isinstance(event, BroadcastRefused) and event.kind is not RejectKind.ALREADY_KNOWN:
            if event.kind is RejectKind.FEE_TOO_LOW and event is not self._bumped_for:
                self._bumps += 1  # too cheap for the node: the next attempt pays twice the rate
                self._bumped_for = event
            note = f"settlement broadcast rejected: {event.reason}"
            why = event.reason
            # Its input is spent: by whom is the chain's to say. Watched afresh, the output is
            # looked up where it was spent (a refund that confirmed ends the channel REFUNDED,
            # naming it, and the retries with it).
            again = event.kind is RejectKind.INPUTS_SPENT
            return self._persist(S.STUCK, lambda now: (self._unwatch(WatchKind.OUTPUT) if again else [])
                                 + self._end_settlement(now, why=why), note=note, updated_at=int(now))
        self._bumps = 0
        if self._record.state is S.STUCK:
            return self._persist(S.SETTLING, self._settled, note="", updated_at=int(now))
        return self._settled(now)

    def _settled(self, now: float) -> Effects:
        return self._end_settlement(now, why=None)

    def _end_settlement(self, now: Optional[float], why: Optional[str], unaffordable: bool = False,
                        retry: bool = True, fee: Optional[int] = None) -> Effects:
        """Tell every requester the outcome; on a failure, keep a retry armed."""
        run, self._settling = self._settling, None
        by = frozenset(run.by) if run is not None else frozenset()
        r = self._record
        if why is None or (r.state is S.SETTLED and r.settlement_tx is not None):
            assert r.settlement_tx is not None
            out: Effects = self._cancel(TimerKind.SETTLE) + self._watch(WatchKind.OUTPUT)
            out.append(SettleSucceeded(r.settlement_tx, by))
            if SettleBy.OPERATOR in by:
                out.append(TellConnection(ConnectionNews.SETTLED, r.settlement_tx))
            return out
        out = [SettleFailed(why, unaffordable, fee)]
        if retry and now is not None and r.state not in FINAL_STATES and TimerKind.SETTLE not in self._timers:
            # Never lose the timer (a bitcoinj bug): try again later.
            out += self._arm(TimerKind.SETTLE, now + self._policy.retry_interval)
        if r.state not in FINAL_STATES:
            out += self._watch(WatchKind.OUTPUT)
        return out

    def _already_closed(self, event: LifecycleEvent, now: float) -> Effects:
        """Settled already: the settlement; refunded: a refusal."""
        r = self._record
        if r.state is S.SETTLED and r.settlement_tx is not None:
            return [SettleSucceeded(r.settlement_tx, frozenset())]
        return [SettleFailed(f"the channel is {r.state.value}", unaffordable=False)]

    def _confirmation_due(self, event: LifecycleEvent, now: float) -> Effects:
        """Ask the chain whether the contract has confirmed."""
        if not self._fired(TimerKind.CONFIRM):
            return []
        self._awaiting = _Awaiting.STATUS
        return [QueryContractStatus()]

    def _contract_status_at_deadline(self, event: LifecycleEvent, now: float) -> Effects:
        """Unconfirmed after contract_confirm_timeout: CONTRACT_FAILED (no more payments)."""
        assert isinstance(event, ContractStatusKnown)
        if event.state is TxState.CONFIRMED:
            return []
        hours = self._policy.contract_confirm_timeout / 3600
        where = "still in the mempool" if event.state is TxState.MEMPOOL else "unknown to the node"
        # The SETTLE timer stays: a contract that confirms after all still carries payments.
        return self._persist(S.CONTRACT_FAILED, _nothing, note=f"contract not confirmed after {hours:g} h ({where})",
                             updated_at=int(now))

    def _input_spent(self, event: LifecycleEvent, now: float) -> Effects:
        """Spent by another transaction: CONTRACT_FAILED; by the contract, 6 deep: stop watching."""
        assert isinstance(event, ContractInputSpent)
        if event.spending_txid == self._record.contract_txid:
            if event.confirmations >= self._policy.contract_final_depth:
                return self._unwatch(WatchKind.INPUTS)
            return []
        return self._persist(S.CONTRACT_FAILED, self._contract_gone,
                             note=f"contract double-spent by {display_hex(event.spending_txid)}", updated_at=int(now))

    def _contract_rejected(self, event: LifecycleEvent, now: float) -> Effects:
        """The node refused the contract: CONTRACT_FAILED."""
        assert isinstance(event, ContractRejected)
        return self._persist(S.CONTRACT_FAILED, self._contract_gone, note=f"{CONTRACT_REJECTED_NOTE}: {event.why}",
                             updated_at=int(now))

    def _contract_unsent(self, event: LifecycleEvent, now: float) -> Effects:
        """The node was never asked (down, credentials refused): nothing was decided about the
        contract, so the channel stays OPEN and its contract is offered again until a node
        answers. The server's outage is no verdict on the client's transaction. Noted on the
        record first, so that a restart goes on retrying."""
        assert isinstance(event, (ContractUnsent, BroadcastRefused))
        retry = self._policy.contract_retry_interval

        def arm(now: float) -> Effects:
            return self._arm(TimerKind.CONTRACT_RETRY, now + retry)

        if self._record.note.startswith(CONTRACT_PENDING_NOTE):
            return arm(now)
        why = event.why if isinstance(event, ContractUnsent) else event.reason
        return self._persist(S.OPEN, arm, note=f"{CONTRACT_PENDING_NOTE} ({why})", updated_at=int(now))

    def _retry_contract(self, event: LifecycleEvent, now: float) -> Effects:
        """Offer the pending contract again."""
        if not self._fired(TimerKind.CONTRACT_RETRY):
            return []
        self._awaiting = _Awaiting.BROADCAST
        return [Broadcast(self._record.contract, TxRole.CONTRACT)]

    def _contract_retried(self, event: LifecycleEvent, now: float) -> Effects:
        """Accepted (or known): the channel is as any other. Unreachable again: later. Refused
        (its inputs spent, the client took its coins back): CONTRACT_FAILED."""
        assert isinstance(event, (BroadcastAccepted, BroadcastRefused))
        if isinstance(event, BroadcastAccepted) or event.kind is RejectKind.ALREADY_KNOWN:
            if self._record.note.startswith(CONTRACT_PENDING_NOTE):
                return self._persist(S.OPEN, _nothing, note="", updated_at=int(now))
            return []
        if event.kind is RejectKind.UNREACHABLE:
            return self._contract_unsent(event, now)
        return self._persist(S.CONTRACT_FAILED, self._contract_gone, note=f"{CONTRACT_REJECTED_NOTE}: {event.reason}",
                             updated_at=int(now))

    def _contract_gone(self, now: float) -> Effects:
        """The contract can never confirm: nothing left to settle or watch."""
        return self._cancel(TimerKind.SETTLE) + self._unwatch(WatchKind.OUTPUT)

    def _output_spent(self, event: LifecycleEvent, now: float) -> Effects:
        """Confirmed spend of the contract output: SETTLED if it is our settlement, else REFUNDED."""
        assert isinstance(event, ContractSpent)
        r = self._record
        ours = r.settlement_tx is not None and event.spending_tx == r.settlement_tx
        if not event.confirmed:
            if ours or event.spending_tx == self._spender_told:
                return []
            self._spender_told = event.spending_tx
            note = f"contract output spent in the mempool by {self._spender(event.spending_tx)}"
            return [NotifyApplication(ChannelEvent(ChannelEventKind.CONTRACT_SPENT, r.contract_txid, note))]
        if ours:
            return self._persist(S.SETTLED, _nothing, note="", updated_at=int(now))
        # The record names what the chain says closed the channel, not our own attempt.
        return self._persist(S.REFUNDED, _nothing, updated_at=int(now), settlement_tx=event.spending_tx,
                             note=f"the contract was spent by {self._spender(event.spending_tx)}")

    def _spender(self, tx: bytes) -> str:
        """``<txid> (the client's refund)`` when its lock time is the channel's expiry, as a
        refund's is; else ``<txid> (not our settlement)``."""
        try:
            parsed = parse_transaction(tx)
        except TransactionParseError:  # the watch passes what the chain holds: not seen, but said
            return "another transaction (not our settlement)"
        what = "the client's refund" if parsed.nLockTime == self._record.expiry else "not our settlement"
        return f"{display_hex(parsed.GetTxid())} ({what})"

    def _new_block(self, event: LifecycleEvent, now: float) -> Effects:
        """Until a settlement confirms it is offered again with every block: a node may have
        dropped it (restart, eviction) and nobody else will send it."""
        tx = self._record.settlement_tx
        return [Rebroadcast(tx, TxRole.SETTLEMENT)] if tx is not None else []


def _nothing(now: float) -> Effects:
    return []


@dataclass(frozen=True)
class Rule:
    """One row: who handles the event in this state, and the states it may write next."""

    handler: Callable[[ServerLifecycle, LifecycleEvent, float], Effects]
    writes: frozenset[ServerChannelState] = frozenset()


L = ServerLifecycle


def _row(handler: Callable[[ServerLifecycle, LifecycleEvent, float], Effects], *writes: ServerChannelState) -> Rule:
    return Rule(handler, frozenset(writes))


#: (stored state, event) -> the row that decides. An event without a row in a state is ignored
#: (a settlement request is answered "the channel is <state>"). Writes go through
#: ``PersistTransition``; the states a row may write are its edges, and they are exactly
#: ``channel.states.SERVER_TRANSITIONS`` (a test holds them equal).
LIFECYCLE_TABLE: Mapping[tuple[ServerChannelState, type], Rule] = {
    # -- open: taking payments -------------------------------------------------------------
    (S.OPEN, Created): _row(L._open_watched),
    (S.OPEN, Loaded): _row(L._open_watched),
    # Who settles before expiry: the server's SETTLE timer (expiry - settle_offset); the client
    # (CLOSE, exhaustion) or the operator may ask sooner. The freeze comes first.
    (S.OPEN, SettleDue): _row(L._settle, S.SETTLING),
    (S.OPEN, SettleRequested): _row(L._settle, S.SETTLING),
    # The contract: refused by the node, double-spent, or unconfirmed for too long: no more
    # payments (the store refuses them once the state is not OPEN).
    (S.OPEN, ContractRejected): _row(L._contract_rejected, S.CONTRACT_FAILED),
    (S.OPEN, ContractInputSpent): _row(L._input_spent, S.CONTRACT_FAILED),
    # A contract that never reached a node (the server's node down, or refusing our
    # credentials) is no refusal: the channel stays OPEN, not resumable, and the contract is
    # offered again every contract_retry_interval until a node judges it.
    (S.OPEN, ContractUnsent): _row(L._contract_unsent, S.OPEN),
    (S.OPEN, ContractRetryDue): _row(L._retry_contract),
    (S.OPEN, BroadcastAccepted): _row(L._contract_retried, S.OPEN),
    (S.OPEN, BroadcastRefused): _row(L._contract_retried, S.OPEN, S.CONTRACT_FAILED),
    (S.OPEN, ConfirmationDue): _row(L._confirmation_due),
    (S.OPEN, ContractStatusKnown): _row(L._contract_status_at_deadline, S.CONTRACT_FAILED),
    # The client's refund (or a settlement) confirmed while the channel was still open.
    (S.OPEN, ContractSpent): _row(L._output_spent, S.SETTLED, S.REFUNDED),
    # -- settling: frozen; the settlement is built, stored, then broadcast ------------------
    (S.SETTLING, Loaded): _row(L._settling_loaded),
    (S.SETTLING, SettleDue): _row(L._settle),
    (S.SETTLING, SettleRequested): _row(L._settle),
    (S.SETTLING, SettlementBuilt): _row(L._settlement_built, S.SETTLING),
    (S.SETTLING, SettlementUnaffordable): _row(L._settlement_unaffordable, S.STUCK),
    (S.SETTLING, ContractStatusKnown): _row(L._contract_status_for_settlement),
    (S.SETTLING, BroadcastAccepted): _row(L._settlement_broadcast),
    # Refused: STUCK with the reason; FEE_TOO_LOW doubles the next attempt's rate.
    (S.SETTLING, BroadcastRefused): _row(L._settlement_broadcast, S.STUCK),
    (S.SETTLING, BlockConnected): _row(L._new_block),
    (S.SETTLING, ContractSpent): _row(L._output_spent, S.SETTLED, S.REFUNDED),
    # -- stuck: kept, retried by the SETTLE timer (every retry_interval) --------------------
    (S.STUCK, Loaded): _row(L._stuck_loaded),
    (S.STUCK, SettleDue): _row(L._settle),
    (S.STUCK, SettleRequested): _row(L._settle),
    (S.STUCK, SettlementBuilt): _row(L._settlement_built, S.SETTLING),
    (S.STUCK, SettlementUnaffordable): _row(L._settlement_unaffordable, S.STUCK),
    (S.STUCK, ContractStatusKnown): _row(L._contract_status_for_settlement),
    (S.STUCK, BroadcastAccepted): _row(L._settlement_broadcast, S.SETTLING),
    # (ALREADY_KNOWN is no refusal: the node has the settlement, as if accepted.)
    (S.STUCK, BroadcastRefused): _row(L._settlement_broadcast, S.STUCK, S.SETTLING),
    (S.STUCK, ContractSpent): _row(L._output_spent, S.SETTLED, S.REFUNDED),
    # -- contract failed: no payments; a never-confirmed contract that confirms after all is
    # still settled when its SETTLE timer (kept in memory) fires, or on the operator's request.
    (S.CONTRACT_FAILED, SettleDue): _row(L._settle, S.SETTLING),
    (S.CONTRACT_FAILED, SettleRequested): _row(L._settle, S.SETTLING),
    (S.CONTRACT_FAILED, ContractSpent): _row(L._output_spent, S.SETTLED, S.REFUNDED),
    # -- final ------------------------------------------------------------------------------
    (S.SETTLED, SettleRequested): _row(L._already_closed),
    (S.REFUNDED, SettleRequested): _row(L._already_closed),
}


def lifecycle_edges() -> dict[ServerChannelState, frozenset[ServerChannelState]]:
    """The state changes the table can write, as ``old -> {new}`` (``SERVER_TRANSITIONS``' shape)."""
    edges: dict[ServerChannelState, set[ServerChannelState]] = {state: set() for state in ServerChannelState}
    for (state, _), rule in LIFECYCLE_TABLE.items():
        edges[state] |= rule.writes
    return {state: frozenset(targets) for state, targets in edges.items()}
