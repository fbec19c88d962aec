"""The server lifecycle machine with plain values (no store, chain or clock), and the manager
that runs it, in memory with task.Clock."""

from dataclasses import replace

import pytest
from bitcoin.core import COutPoint, CMutableTransaction, CMutableTxIn, CMutableTxOut, CScript

from twisted_paychan.chain.types import OutPoint, RejectKind, TxState
from twisted_paychan.channel import server_lifecycle as lc
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.channel.states import SERVER_TRANSITIONS

S = ServerChannelState
POLICY = lc.LifecyclePolicy(fee_rate=5000, settle_offset=7200, retry_interval=600.0,
                            contract_confirm_timeout=6 * 3600.0, contract_final_depth=6)
NOW = 1_700_000_000
EXPIRY = NOW + 86_400
FUNDING = OutPoint(b"\x11" * 32, 3)
SETTLEMENT = b"settlement-tx"
REFUND = b"refund-tx"


def _contract() -> bytes:
    tx = CMutableTransaction([CMutableTxIn(COutPoint(FUNDING.txid, FUNDING.index))],
                             [CMutableTxOut(1_000_000, CScript(b"\xa9\x14" + b"\x00" * 20 + b"\x87"))])
    return tx.serialize()


CONTRACT = _contract()
TXID = b"\x22" * 32


def record(state=S.OPEN, **fields) -> ServerChannelRecord:
    base = ServerChannelRecord(
        contract_txid=TXID, version=2, contract=CONTRACT, value=1_000_000, expiry=EXPIRY,
        server_key=b"\x02" * 33, client_key=b"\x03" * 33, best_value=50_000, best_signature=b"sig",
        state=state, created_at=NOW, updated_at=NOW,
    )
    return replace(base, **fields)


def machine(state=S.OPEN, start=lc.Created(), **fields):
    m = lc.ServerLifecycle(record(state, **fields), POLICY)
    if start is not None:
        m.handle(start, NOW)
    return m


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def write(effects):
    (persist,) = of(effects, lc.PersistTransition)
    return persist


def stored(m, effects, now=NOW):
    """The store did the write the machine asked for: what follows."""
    p = write(effects)
    return m.handle(lc.TransitionStored(replace(m.record, state=p.new, **p.changes)), now)


# -- the table ------------------------------------------------------------------------------------


def test_the_table_writes_exactly_the_store_table():
    """Every edge a row may write is a legal store transition, and every legal store
    transition is written by some row: the two tables cannot drift apart."""
    assert lc.lifecycle_edges() == {state: frozenset(targets) for state, targets in SERVER_TRANSITIONS.items()}


#: (stored state, extra fields, event) -> the state it is written to (None: no write).
DECISIONS = [
    (S.OPEN, {}, lc.SettleRequested(lc.SettleBy.CLIENT), S.SETTLING),
    (S.OPEN, {}, lc.SettleRequested(lc.SettleBy.OPERATOR), S.SETTLING),
    (S.OPEN, {}, lc.SettleDue(), S.SETTLING),
    (S.CONTRACT_FAILED, {}, lc.SettleRequested(lc.SettleBy.OPERATOR), S.SETTLING),
    (S.OPEN, {}, lc.ContractRejected("bad-txns-inputs-missingorspent"), S.CONTRACT_FAILED),
    (S.OPEN, {}, lc.ContractInputSpent(b"\x77" * 32, 1), S.CONTRACT_FAILED),
    (S.OPEN, {}, lc.ContractInputSpent(TXID, 1), None),
    (S.OPEN, {}, lc.ContractSpent(REFUND, confirmed=False), None),
    (S.OPEN, {}, lc.ContractSpent(REFUND, confirmed=True), S.REFUNDED),
    (S.SETTLING, {"settlement_tx": SETTLEMENT}, lc.ContractSpent(SETTLEMENT, confirmed=True), S.SETTLED),
    (S.SETTLING, {"settlement_tx": SETTLEMENT}, lc.ContractSpent(REFUND, confirmed=True), S.REFUNDED),
    (S.STUCK, {"settlement_tx": SETTLEMENT}, lc.ContractSpent(SETTLEMENT, confirmed=True), S.SETTLED),
    (S.CONTRACT_FAILED, {}, lc.ContractSpent(REFUND, confirmed=True), S.REFUNDED),
    (S.SETTLING, {"settlement_tx": SETTLEMENT}, lc.ContractInputSpent(b"\x77" * 32, 1), None),
    (S.CONTRACT_FAILED, {}, lc.ContractInputSpent(b"\x77" * 32, 1), None),
    (S.SETTLED, {"settlement_tx": SETTLEMENT}, lc.ContractSpent(REFUND, confirmed=True), None),
    (S.REFUNDED, {}, lc.SettleDue(), None),
]


@pytest.mark.parametrize("state, fields, event, new", DECISIONS,
                         ids=[f"{s.value}-{type(e).__name__}" for s, _, e, _ in DECISIONS])
def test_decisions(state, fields, event, new):
    start = lc.Loaded() if state is not S.OPEN else lc.Created()
    m = machine(state, start=start, **fields)
    if isinstance(event, lc.SettleDue):
        m.handle(lc.Created(), NOW)  # the SETTLE timer is armed (a cancelled one's event is stale)
    out = m.handle(event, NOW)
    writes = of(out, lc.PersistTransition)
    if new is None:
        assert writes == []
    else:
        assert [(w.expected, w.new) for w in writes] == [(state, new)]


# -- "who settles a channel before expiry" ----------------------------------------------------


def test_the_server_settles_before_expiry_from_its_own_timer():
    m = lc.ServerLifecycle(record(), POLICY)
    out = m.handle(lc.Created(), NOW)
    assert lc.ArmTimer(lc.TimerKind.SETTLE, EXPIRY - 7200) in out
    assert lc.ArmTimer(lc.TimerKind.CONFIRM, NOW + 6 * 3600) in out
    assert lc.WatchOutpoints(lc.WatchKind.INPUTS, (FUNDING,)) in out
    assert lc.WatchOutpoints(lc.WatchKind.OUTPUT, (OutPoint(TXID, 0),)) in out
    due = EXPIRY - 7200
    out = m.handle(lc.SettleDue(), due)
    assert out[0] == lc.TellConnection(lc.ConnectionNews.CLOSE)  # a connected client gets CLOSE first
    assert write(out) == lc.PersistTransition(S.OPEN, S.SETTLING, {"note": "settling", "updated_at": due})
    out = stored(m, out, due)
    # Frozen: the contract's inputs and its confirmation no longer matter; the settlement is
    # built at the configured rate, or the floor (the server's own settlement).
    assert lc.CancelTimer(lc.TimerKind.CONFIRM) in out and lc.Unwatch(lc.WatchKind.INPUTS) in out
    assert lc.NotifyApplication(lc.ChannelEvent(lc.ChannelEventKind.SETTLING, TXID, "settling")) in out
    assert out[-1] == lc.BuildSettlement((5000, 1000))
    out = m.handle(lc.SettlementBuilt(SETTLEMENT, 5000), due)
    assert write(out) == lc.PersistTransition(S.SETTLING, S.SETTLING,
                                              {"settlement_tx": SETTLEMENT, "note": "", "updated_at": due})
    out = stored(m, out, due)  # stored before it is broadcast
    assert out == [lc.QueryContractStatus()]
    out = m.handle(lc.ContractStatusKnown(TxState.CONFIRMED), due)
    assert out == [lc.Broadcast(SETTLEMENT, lc.TxRole.SETTLEMENT)]
    out = m.handle(lc.BroadcastAccepted(lc.TxRole.SETTLEMENT), due)
    assert out == [lc.SettleSucceeded(SETTLEMENT, frozenset({lc.SettleBy.EXPIRY}))]
    # ... until it confirms.
    assert m.handle(lc.BlockConnected(1), due) == [lc.Rebroadcast(SETTLEMENT, lc.TxRole.SETTLEMENT)]
    out = m.handle(lc.ContractSpent(SETTLEMENT, confirmed=True), due + 600)
    out = stored(m, out, due + 600)
    assert m.state is S.SETTLED
    assert lc.Unwatch(lc.WatchKind.OUTPUT) in out
    assert m.handle(lc.BlockConnected(2), due + 1200) == []


def test_a_forgotten_contract_goes_back_to_the_node_before_the_settlement():
    m = machine(S.SETTLING, start=lc.Loaded(), settlement_tx=SETTLEMENT)
    assert m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW) == [lc.QueryContractStatus()]
    assert m.handle(lc.ContractStatusKnown(TxState.UNKNOWN), NOW) == [lc.Broadcast(CONTRACT, lc.TxRole.CONTRACT)]
    out = m.handle(lc.BroadcastRefused(lc.TxRole.CONTRACT, RejectKind.INPUTS_SPENT, "missing-inputs"), NOW)
    assert out == [lc.Broadcast(SETTLEMENT, lc.TxRole.SETTLEMENT)]


def test_a_client_settlement_gets_the_configured_rate_only():
    m = machine()
    out = stored(m, m.handle(lc.SettleRequested(lc.SettleBy.CLIENT), NOW))
    assert out[-1] == lc.BuildSettlement((5000,))


def test_loaded_channels_are_rebroadcast_and_rearmed():
    out = machine(start=None).handle(lc.Loaded(), NOW)
    assert out[0] == lc.Rebroadcast(CONTRACT, lc.TxRole.CONTRACT)
    assert lc.ArmTimer(lc.TimerKind.SETTLE, EXPIRY - 7200) in out
    out = machine(S.SETTLING, start=None, settlement_tx=SETTLEMENT).handle(lc.Loaded(), NOW)
    assert out[:2] == [lc.Rebroadcast(CONTRACT, lc.TxRole.CONTRACT), lc.Rebroadcast(SETTLEMENT, lc.TxRole.SETTLEMENT)]
    assert not of(out, lc.ArmTimer)
    out = machine(S.STUCK, start=None, settlement_tx=SETTLEMENT).handle(lc.Loaded(), NOW)
    assert lc.ArmTimer(lc.TimerKind.SETTLE, EXPIRY - 7200) in out
    for final in (S.SETTLED, S.REFUNDED, S.CONTRACT_FAILED):
        assert machine(final, start=None).handle(lc.Loaded(), NOW) == []


# -- "what happens when the contract is double-spent" ----------------------------------------


def test_a_double_spent_contract_fails_the_channel():
    m = machine()
    out = m.handle(lc.ContractInputSpent(b"\x77" * 32, 1), NOW + 60)
    p = write(out)
    assert (p.expected, p.new) == (S.OPEN, S.CONTRACT_FAILED)
    assert p.changes["note"] == "contract double-spent by " + "77" * 32
    out = stored(m, out)
    # Nothing left to settle, confirm or watch.
    assert set(out) >= {lc.CancelTimer(lc.TimerKind.SETTLE), lc.CancelTimer(lc.TimerKind.CONFIRM),
                        lc.Unwatch(lc.WatchKind.INPUTS), lc.Unwatch(lc.WatchKind.OUTPUT)}
    assert of(out, lc.NotifyApplication)[0].event.kind is lc.ChannelEventKind.CONTRACT_FAILED
    assert m.handle(lc.SettleDue(), EXPIRY) == []  # its timer is gone


def test_the_contract_inputs_are_watched_until_the_contract_is_deep():
    m = machine()
    assert m.handle(lc.ContractInputSpent(TXID, 5), NOW) == []
    assert m.handle(lc.ContractInputSpent(TXID, 6), NOW) == [lc.Unwatch(lc.WatchKind.INPUTS)]


@pytest.mark.parametrize("status, failed", [(TxState.CONFIRMED, False), (TxState.MEMPOOL, True),
                                            (TxState.UNKNOWN, True)])
def test_a_contract_unconfirmed_after_six_hours_fails_the_channel(status, failed):
    m = machine()
    assert m.handle(lc.ConfirmationDue(), NOW + 6 * 3600) == [lc.QueryContractStatus()]
    out = m.handle(lc.ContractStatusKnown(status), NOW + 6 * 3600)
    if not failed:
        assert out == []
        return
    assert write(out).new is S.CONTRACT_FAILED and "not confirmed after 6 h" in write(out).changes["note"]
    out = stored(m, out)
    # Its payments are still owed if it confirms after all: the SETTLE timer stays.
    assert lc.CancelTimer(lc.TimerKind.SETTLE) not in out
    assert write(m.handle(lc.SettleDue(), EXPIRY - 7200)).new is S.SETTLING


def test_a_contract_the_node_rejects_fails_the_channel():
    m = machine()
    p = write(m.handle(lc.ContractRejected("bad-txns-inputs-missingorspent"), NOW))
    assert p.new is S.CONTRACT_FAILED and p.changes["note"] == "contract rejected by the node: bad-txns-inputs-missingorspent"


def test_a_contract_that_reached_no_node_stays_open_and_is_offered_again():
    """The server's node was down (or refused our credentials): no verdict on the contract."""
    m = machine()
    out = m.handle(lc.ContractUnsent("cannot reach http://127.0.0.1:18443"), NOW)
    p = write(out)  # noted first: a restart goes on retrying
    assert (p.expected, p.new) == (S.OPEN, S.OPEN)
    assert p.changes["note"] == f"{lc.CONTRACT_PENDING_NOTE} (cannot reach http://127.0.0.1:18443)"
    assert stored(m, out) == [lc.ArmTimer(lc.TimerKind.CONTRACT_RETRY, NOW + POLICY.contract_retry_interval)]
    assert m.state is S.OPEN and m.contract_pending
    # Loaded after a restart: retried at once, not resumable meanwhile.
    loaded = lc.ServerLifecycle(m.record, POLICY)
    out = loaded.handle(lc.Loaded(), NOW + 5)
    assert lc.ArmTimer(lc.TimerKind.CONTRACT_RETRY, NOW + 5) in out and not of(out, lc.Rebroadcast)
    assert loaded.contract_pending
    later = NOW + POLICY.contract_retry_interval
    assert m.handle(lc.ContractRetryDue(), later) == [lc.Broadcast(CONTRACT, lc.TxRole.CONTRACT)]
    assert m.contract_pending  # until a node answers
    # Still unreachable: again later.
    out = m.handle(lc.BroadcastRefused(lc.TxRole.CONTRACT, RejectKind.UNREACHABLE, "HTTP 401"), later)
    assert out == [lc.ArmTimer(lc.TimerKind.CONTRACT_RETRY, later + POLICY.contract_retry_interval)]
    m.handle(lc.ContractRetryDue(), later + 30)
    out = m.handle(lc.BroadcastAccepted(lc.TxRole.CONTRACT), later + 30)
    assert write(out).changes["note"] == ""  # the note goes once a node has it
    assert stored(m, out, later + 30) == []
    assert m.state is S.OPEN and not m.contract_pending


def test_a_pending_contract_the_node_refuses_fails_the_channel():
    m = machine()
    stored(m, m.handle(lc.ContractUnsent("connection refused"), NOW))
    m.handle(lc.ContractRetryDue(), NOW + 30)
    why = "insufficient fee, rejecting replacement 00, less fees than conflicting txs; 0.00001 < 0.00002"
    out = m.handle(lc.BroadcastRefused(lc.TxRole.CONTRACT, RejectKind.FEE_TOO_LOW, why), NOW + 30)
    p = write(out)
    assert (p.expected, p.new) == (S.OPEN, S.CONTRACT_FAILED)
    assert p.changes["note"] == f"contract rejected by the node: {why}"
    out = stored(m, out, NOW + 30)
    assert lc.CancelTimer(lc.TimerKind.SETTLE) in out
    assert lc.never_accepted(m.record)  # prunable, as a contract refused at once


def test_a_spend_by_the_refund_is_told_once_and_recorded_as_what_closed_the_channel():
    refund = CMutableTransaction([CMutableTxIn(COutPoint(TXID, 0), nSequence=0xFFFFFFFE)],
                                 [CMutableTxOut(990_000, CScript(b"\x51"))], nLockTime=EXPIRY).serialize()
    m = machine(S.STUCK, start=None, settlement_tx=SETTLEMENT)
    out = m.handle(lc.ContractSpent(refund, confirmed=False), NOW)
    (told,) = of(out, lc.NotifyApplication)
    assert told.event.kind is lc.ChannelEventKind.CONTRACT_SPENT
    assert told.event.note.endswith("(the client's refund)")
    assert m.handle(lc.ContractSpent(refund, confirmed=False), NOW) == []  # once
    p = write(m.handle(lc.ContractSpent(refund, confirmed=True), NOW))
    assert p.new is S.REFUNDED and p.changes["settlement_tx"] == refund  # not our own attempt
    assert p.changes["note"].startswith("the contract was spent by ") and p.changes["note"].endswith("(the client's refund)")


def test_a_settlement_refused_for_a_spent_input_looks_the_spender_up_again():
    m = machine()  # its output watched since it was created
    stored(m, m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW))
    stored(m, m.handle(lc.SettlementBuilt(SETTLEMENT, 5000), NOW))
    assert m.handle(lc.ContractStatusKnown(TxState.CONFIRMED), NOW) == [lc.Broadcast(SETTLEMENT, lc.TxRole.SETTLEMENT)]
    out = m.handle(lc.BroadcastRefused(lc.TxRole.SETTLEMENT, RejectKind.INPUTS_SPENT,
                                       "bad-txns-inputs-missingorspent"), NOW)
    out = stored(m, out)
    # Watched afresh: the watch's first look finds who spent it.
    unwatch = out.index(lc.Unwatch(lc.WatchKind.OUTPUT))
    assert out.index(lc.WatchOutpoints(lc.WatchKind.OUTPUT, (OutPoint(TXID, 0),))) > unwatch


# -- failures, fee bumps, retries ------------------------------------------------------------------


def settling(by=lc.SettleBy.OPERATOR):
    """A machine whose settlement has been stored and is about to be broadcast (no SETTLE timer
    armed: a failure arms one for the retry)."""
    m = machine(start=None)
    stored(m, m.handle(lc.SettleRequested(by), NOW))
    stored(m, m.handle(lc.SettlementBuilt(SETTLEMENT, 5000), NOW))
    assert m.handle(lc.ContractStatusKnown(TxState.CONFIRMED), NOW) == [lc.Broadcast(SETTLEMENT, lc.TxRole.SETTLEMENT)]
    return m


def test_fee_too_low_rebuilds_at_twice_the_rate():
    m = settling()
    out = m.handle(lc.BroadcastRefused(lc.TxRole.SETTLEMENT, RejectKind.FEE_TOO_LOW, "mempool min fee not met"), NOW)
    p = write(out)
    assert (p.expected, p.new) == (S.SETTLING, S.STUCK)
    assert p.changes["note"] == "settlement broadcast rejected: mempool min fee not met" and "settlement_tx" not in p.changes
    out = stored(m, out)
    assert lc.SettleFailed("mempool min fee not met", unaffordable=False) in out
    assert lc.ArmTimer(lc.TimerKind.SETTLE, NOW + 600) in out  # retried
    assert m.handle(lc.SettleDue(), NOW + 600) == [lc.TellConnection(lc.ConnectionNews.CLOSE),
                                                   lc.BuildSettlement((10_000,))]
    out = m.handle(lc.SettlementBuilt(b"bumped", 10_000), NOW + 600)
    assert write(out) == lc.PersistTransition(S.STUCK, S.SETTLING,
                                              {"settlement_tx": b"bumped", "note": "", "updated_at": NOW + 600})


def test_a_failed_settlement_keeps_an_armed_timer_or_arms_a_retry():
    # Asked by the client with the expiry timer armed: that timer stays the retry.
    m = machine()
    m.handle(lc.SettleRequested(lc.SettleBy.CLIENT), NOW)
    assert not of(m.handle(lc.EffectFailed("disk full"), NOW), lc.ArmTimer)
    # Asked by the timer itself: it is armed again, retry_interval later (never lost).
    due = EXPIRY - 7200
    m.handle(lc.SettleDue(), due)
    assert m.handle(lc.EffectFailed("disk full"), due)[-1] == lc.ArmTimer(lc.TimerKind.SETTLE, due + 600)


def test_only_the_kind_decides_a_bump_never_the_words():
    m = settling()
    stored(m, m.handle(lc.BroadcastRefused(lc.TxRole.SETTLEMENT, RejectKind.INVALID, "fee fee fee"), NOW))
    # No bump: the stored settlement is offered again as it is.
    assert m.handle(lc.SettleDue(), NOW + 600)[-1] == lc.QueryContractStatus()


def test_a_bump_b_cannot_pay_keeps_the_stored_settlement():
    m = settling()
    stored(m, m.handle(lc.BroadcastRefused(lc.TxRole.SETTLEMENT, RejectKind.FEE_TOO_LOW, "min relay fee not met"),
                       NOW))
    m.handle(lc.SettleDue(), NOW + 600)
    assert m.handle(lc.SettlementUnaffordable(), NOW + 600) == [lc.QueryContractStatus()]
    m.handle(lc.ContractStatusKnown(TxState.CONFIRMED), NOW + 600)
    out = m.handle(lc.BroadcastAccepted(lc.TxRole.SETTLEMENT), NOW + 600)
    assert write(out).new is S.SETTLING  # STUCK -> SETTLING once the node takes it
    out = stored(m, out)
    assert of(out, lc.SettleSucceeded)[0].tx == SETTLEMENT


def test_a_first_settlement_b_cannot_pay_is_stuck_and_retried():
    m = machine(start=None)
    stored(m, m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW))
    out = m.handle(lc.SettlementUnaffordable(), NOW)
    assert write(out).new is S.STUCK and "fee exceeds" in write(out).changes["note"]
    out = stored(m, out)
    assert of(out, lc.SettleFailed)[0].unaffordable
    assert lc.ArmTimer(lc.TimerKind.SETTLE, NOW + 600) in out


def test_a_failed_write_or_build_fails_the_settlement_and_keeps_a_retry():
    m = machine(start=None)
    m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW)
    out = m.handle(lc.EffectFailed("disk full"), NOW)
    assert out[0] == lc.SettleFailed("disk full", unaffordable=False)
    assert lc.ArmTimer(lc.TimerKind.SETTLE, NOW + 600) in out


def test_nothing_paid_nothing_to_settle():
    m = machine(best_signature=None, best_value=0)
    assert m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW) == [
        lc.SettleFailed("nothing was paid on this channel", unaffordable=True)]


def test_settling_a_finished_channel_answers_at_once():
    assert machine(S.SETTLED, start=None, settlement_tx=SETTLEMENT).handle(
        lc.SettleRequested(lc.SettleBy.OPERATOR), NOW) == [lc.SettleSucceeded(SETTLEMENT, frozenset())]
    assert machine(S.REFUNDED, start=None).handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW) == [
        lc.SettleFailed("the channel is refunded", unaffordable=False)]


# -- one outcome at a time: joined requests, held events, conflicts -------------------------------


def test_requests_during_a_settlement_join_it():
    m = machine()
    out = m.handle(lc.SettleRequested(lc.SettleBy.CLIENT), NOW)
    assert m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW) == []
    stored(m, out)
    stored(m, m.handle(lc.SettlementBuilt(SETTLEMENT, 5000), NOW))
    m.handle(lc.ContractStatusKnown(TxState.CONFIRMED), NOW)
    out = m.handle(lc.BroadcastAccepted(lc.TxRole.SETTLEMENT), NOW)
    assert lc.SettleSucceeded(SETTLEMENT, frozenset({lc.SettleBy.CLIENT, lc.SettleBy.OPERATOR})) in out
    # The operator asked: a connected client hears the settlement.
    assert out[-1] == lc.TellConnection(lc.ConnectionNews.SETTLED, SETTLEMENT)


def test_events_during_a_write_wait_for_its_outcome():
    m = machine()
    out = m.handle(lc.SettleRequested(lc.SettleBy.CLIENT), NOW)
    assert m.handle(lc.ContractInputSpent(b"\x77" * 32, 1), NOW) == []  # held
    after = stored(m, out)
    # Handled on the frozen channel: a double spend of a settling channel's contract writes nothing.
    assert of(after, lc.PersistTransition) == [] and after[-1] == lc.BuildSettlement((5000,))


def test_a_conflict_decides_again_on_the_fresh_record():
    m = machine()
    out = m.handle(lc.SettleRequested(lc.SettleBy.OPERATOR), NOW)
    assert write(out).expected is S.OPEN
    # Another writer had moved it to STUCK (another server on the same database, say).
    out = m.handle(lc.TransitionConflict(record(S.STUCK)), NOW)
    assert out == [lc.BuildSettlement((5000, 1000))]
    assert m.state is S.STUCK


def test_a_conflict_on_a_double_spend_finds_the_channel_already_failed():
    m = machine()
    m.handle(lc.ContractInputSpent(b"\x77" * 32, 1), NOW)
    assert m.handle(lc.TransitionConflict(record(S.CONTRACT_FAILED)), NOW) == []


def test_stopped_drops_every_timer_and_watch_and_loaded_brings_them_back():
    m = machine()
    out = m.handle(lc.Stopped(), NOW)
    assert set(out) == {lc.CancelTimer(lc.TimerKind.SETTLE), lc.CancelTimer(lc.TimerKind.CONFIRM),
                        lc.Unwatch(lc.WatchKind.INPUTS), lc.Unwatch(lc.WatchKind.OUTPUT)}
    assert m.handle(lc.Stopped(), NOW) == []
    out = m.handle(lc.Loaded(), NOW)
    assert len(of(out, lc.ArmTimer)) == 2 and len(of(out, lc.WatchOutpoints)) == 2


def test_a_stale_timer_or_outcome_is_ignored():
    m = machine()
    assert m.handle(lc.TransitionStored(record()), NOW) == []  # nothing was outstanding
    m2 = machine(start=None)
    assert m2.handle(lc.SettleDue(), NOW) == []  # never armed (or cancelled)


# -- the manager running it (task.Clock, memory backends) -------------------------------------------


def test_manager_subscribers_hear_every_step_with_the_contract_txid():
    from channel_pair import Pair, result_of
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector

    pair = Pair()
    events = []
    pair.channels.subscribe(events.append)
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(1000)
    pair.pump()
    result_of(d)
    pair.chain.mine(1)
    settlement = result_of(pair.channels.settle(txid))
    pair.pump()
    pair.chain.mine(1)
    pair.clock.advance(0)
    kinds = [e.kind for e in events]
    assert set(kinds[:3]) == {lc.ChannelEventKind.OPENED, lc.ChannelEventKind.PAYMENT}  # initial payment, then 1000
    assert lc.ChannelEventKind.SETTLING in kinds and kinds[-1] is lc.ChannelEventKind.SETTLED
    assert lc.ChannelEventKind.CLOSED in kinds  # the client was told, and went
    assert {e.contract_txid for e in events} == {txid}
    assert result_of(pair.channels.channel(txid)).settlement_tx == settlement
    assert [r.contract_txid for r in result_of(pair.channels.list_channels())] == [txid]


def test_manager_settles_through_a_conflicting_writer():
    """A state moved behind the manager's back is a conflict the machine decides again on,
    never an unhandled failure."""
    from channel_pair import Pair, result_of
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector

    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    client.disconnect()
    pair.pump()
    pair.chain.mine(1)
    result_of(pair.server_store.transition_server(txid, S.OPEN, S.CONTRACT_FAILED, note="someone else"))
    settlement = result_of(pair.channels.settle(txid))
    got = result_of(pair.server_store.server_channel(txid))
    assert got.state is S.SETTLING and got.settlement_tx == settlement


def test_manager_settle_all_reports_each_channel():
    from channel_pair import Pair, result_of
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector

    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    pair.chain.mine(1)
    (result,) = result_of(pair.channels.settle_all())
    assert result.contract_txid == txid and result.settlement_tx is not None and result.error is None
    assert pair.server_closed is not None  # the connected client got CLOSE{settlement}
    missing = pair.channels.settle(b"\x99" * 32)
    failure = []
    missing.addErrback(failure.append)
    assert failure and failure[0].check(KeyError)


def test_manager_marks_a_contract_the_node_rejects_before_the_client_hears():
    """Stored before it went out, refused by the node: CONTRACT_FAILED, then ERROR to the client
    (even with a store whose writes take a reactor turn)."""
    from twisted.internet import defer

    from channel_pair import Pair, failure_of, result_of
    from twisted_paychan.chain.types import BroadcastRejected
    from twisted_paychan.channel.errors import ChannelClosed
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector

    pair = Pair()
    pair.chain.broadcast = lambda raw: defer.fail(BroadcastRejected("bad-txns-inputs-missingorspent"))
    store = pair.server_store
    real = store.transition_server
    seen = []

    def slow_transition(*args, **changes):
        d = defer.Deferred()
        pair.clock.callLater(0, lambda: real(*args, **changes).chainDeferred(d))
        return d

    store.transition_server = slow_transition
    pair.channels.subscribe(lambda e: seen.append((e.kind, pair.server_closed)))
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    assert failure_of(client.opened).check(ChannelClosed)
    (record,) = result_of(store.server_channels())
    assert record.state is S.CONTRACT_FAILED
    assert record.note == "contract rejected by the node: bad-txns-inputs-missingorspent"
    # The record was marked while the connection was still open, not after.
    assert (lc.ChannelEventKind.CONTRACT_FAILED, None) in seen
