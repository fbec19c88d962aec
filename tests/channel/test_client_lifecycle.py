"""The client lifecycle machine in memory, table by table: every edge of ``LIFECYCLE`` is taken
by its trigger and stored by compare-and-set, nothing else moves a channel, the refund is
broadcast from expiry + 300 and retried on every block until the node takes it, refusals are
judged by their kind, and a settlement from the chain is checked to pay our change."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from bitcoin.core import COutPoint, CMutableTransaction, CMutableTxIn, CMutableTxOut, CScript

from twisted_paychan import constants as C
from twisted_paychan.bitcoin.scripts import p2pkh_script
from twisted_paychan.chain.types import OutPoint, RejectKind
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.channel.client_lifecycle import LIFECYCLE, Trigger
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState
from twisted_paychan.channel.states import CLIENT_TRANSITIONS

S = ClientChannelState
TXID = b"\x11" * 32
CLIENT_KEY = b"\x02" + b"\x33" * 32
NOW = 1_700_000_000


def spend(value: int, script: bytes = p2pkh_script(CLIENT_KEY)) -> bytes:
    return bytes(CMutableTransaction([CMutableTxIn(COutPoint(TXID, 0))],
                                     [CMutableTxOut(value, CScript(script))]).serialize())


RECORD = ClientChannelRecord(
    contract_txid=TXID, server_id=b"\x22" * 32, version=2, contract=b"contract", refund=spend(999_000),
    client_key=CLIENT_KEY, server_key=b"\x03" + b"\x44" * 32, value=1_000_000, client_change=900_000,
    expiry=NOW + 86_400,
)
SETTLEMENT = spend(900_000)
OTHER_SETTLEMENT = spend(950_000)


def loaded(state: S = S.OPEN, refunds: bool = True, **fields: Any) -> tuple[lc.ClientLifecycle, list[lc.Effect]]:
    machine = lc.ClientLifecycle()
    effects = machine.handle(lc.Loaded(replace(RECORD, state=state, **fields), refunds=refunds))
    return machine, effects


def stored(machine: lc.ClientLifecycle, effect: lc.Effect) -> list[lc.Effect]:
    """What the store does with a PersistTransition, answered back."""
    assert isinstance(effect, lc.PersistTransition)
    assert machine.record is not None and machine.record.state is effect.expected
    return machine.handle(lc.TransitionStored(replace(machine.record, state=effect.new, **effect.changes)))


def of(kind: type, effects: list[lc.Effect]) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


# -- the table --------------------------------------------------------------------------------


def test_the_table_is_the_stores_table():
    edges = {(old, new) for (old, _), new in LIFECYCLE.items()}
    declared = {(old, new) for old, news in CLIENT_TRANSITIONS.items() for new in news}
    assert edges == declared


#: The event that stands for each trigger.
def trigger_event(trigger: Trigger) -> lc.Event:
    return {
        Trigger.REFUND_DUE: lc.RefundDue(NOW),
        Trigger.SETTLEMENT_RECEIVED: lc.SettlementReceived(OTHER_SETTLEMENT, NOW),
        Trigger.SETTLEMENT_ON_CHAIN: lc.ContractSpent(OTHER_SETTLEMENT, False, NOW),
        Trigger.REFUND_CONFIRMED: lc.ContractSpent(RECORD.refund, True, NOW),
        Trigger.EXHAUSTED: lc.SettlementAwaited(exhausted=True, now=NOW),
        Trigger.OPENING_FAILED: lc.OpeningFailed(OTHER_SETTLEMENT, "the server's node is unavailable", NOW),
    }[trigger]


@pytest.mark.parametrize("state,trigger", sorted(((s, t) for s in S for t in Trigger), key=str), ids=str)
def test_every_pair(state, trigger):
    """A listed pair stores its new state by compare-and-set; any other pair stores nothing."""
    machine, _ = loaded(state, close_tx=SETTLEMENT if state is S.SETTLED else None)
    effects = machine.handle(trigger_event(trigger))
    persists = of(lc.PersistTransition, effects)
    if (state, trigger) in LIFECYCLE:
        assert [(p.expected, p.new) for p in persists] == [(state, LIFECYCLE[state, trigger])]
        assert set(persists[0].changes) <= {"note", "close_tx", "updated_at"}
        assert persists[0].changes["updated_at"] == NOW
    else:
        assert persists == []


# -- loading ----------------------------------------------------------------------------------


def test_loaded_watches_and_arms_the_refund_timer():
    _, effects = loaded()
    assert effects == [lc.WatchOutpoint(OutPoint(TXID, 0)), lc.ArmTimer(RECORD.expiry + C.CLIENT_REFUND_DELAY)]


def test_loaded_without_refunds_watches_only_when_a_settlement_is_awaited():
    """``paychan pay``: no refund timer; the contract output is watched once our CLOSE ended in
    EOF (a stock bitcoinj server, §1.4), for the settlement on the chain."""
    machine, effects = loaded(refunds=False)
    assert effects == []
    assert machine.handle(lc.SettlementAwaited()) == [lc.WatchOutpoint(OutPoint(TXID, 0))]
    assert machine.handle(lc.SettlementAwaited()) == []


def test_exhausted_channel_is_noted_until_its_settlement():
    """EOF after the payment that left no change (§7.3 step 4): the open record is noted as
    awaiting the server's settlement (OPEN -> OPEN), the output watched; the settlement seen on
    the chain ends it SETTLED and clears the note."""
    machine, _ = loaded(refunds=False)
    effects = machine.handle(lc.SettlementAwaited(exhausted=True, now=NOW))
    [persist] = of(lc.PersistTransition, effects)
    assert (persist.expected, persist.new) == (S.OPEN, S.OPEN)
    assert persist.changes == {"note": lc.EXHAUSTED_NOTE, "updated_at": NOW}
    assert lc.WatchOutpoint(OutPoint(TXID, 0)) in effects
    # A spend seen while the note is being stored waits for it.
    assert machine.handle(lc.ContractSpent(SETTLEMENT, False, NOW)) == []
    noted = replace(machine.record, note=lc.EXHAUSTED_NOTE, updated_at=NOW)
    effects = machine.handle(lc.TransitionStored(noted))
    [persist] = of(lc.PersistTransition, effects)
    assert (persist.expected, persist.new) == (S.OPEN, S.SETTLED)
    assert persist.changes["note"] == "" and persist.changes["close_tx"] == SETTLEMENT
    # Noted twice (a second EOF, a restart) stores nothing new.
    machine2, _ = loaded(refunds=False)
    machine2.record = noted
    assert of(lc.PersistTransition, machine2.handle(lc.SettlementAwaited(exhausted=True, now=NOW))) == []


def test_loaded_on_start_offers_the_contract_again():
    machine = lc.ClientLifecycle()
    effects = machine.handle(lc.Loaded(RECORD, refunds=True, rebroadcast=True))
    assert lc.Broadcast(RECORD.contract, lc.TxRole.CONTRACT_ON_LOAD) in effects
    assert machine.handle(lc.BroadcastRefused(lc.TxRole.CONTRACT_ON_LOAD, RejectKind.INPUTS_SPENT, "x")) == []


@pytest.mark.parametrize("state", [S.SETTLED, S.REFUNDED])
def test_finished_channels_are_not_followed(state):
    assert loaded(state)[1] == []


# -- the refund -------------------------------------------------------------------------------


def test_refund_from_expiry_retried_every_block_until_accepted():
    machine, _ = loaded()
    persist, = machine.handle(lc.RefundDue(NOW))
    assert (persist.expected, persist.new) == (S.OPEN, S.EXPIRING)
    after = stored(machine, persist)
    assert after == [lc.Notify(lc.ChannelExpiring(TXID)), lc.CheckContract(TXID)]
    # The server never broadcast the contract: ours goes first; the node refuses it this time.
    assert machine.handle(lc.ContractStatus(known=False)) == [lc.Broadcast(RECORD.contract, lc.TxRole.CONTRACT)]
    refused = machine.handle(lc.BroadcastRefused(lc.TxRole.CONTRACT, RejectKind.UNREACHABLE, "down"))
    assert of(lc.Notify, refused) and not machine.attempting
    # Next block: the contract is accepted, the refund is non-final (BIP 113).
    assert machine.handle(lc.BlockConnected(NOW + 600)) == [lc.CheckContract(TXID)]
    assert machine.handle(lc.ContractStatus(known=False)) == [lc.Broadcast(RECORD.contract, lc.TxRole.CONTRACT)]
    assert machine.handle(lc.BroadcastAccepted(lc.TxRole.CONTRACT)) == [lc.Broadcast(RECORD.refund, lc.TxRole.REFUND)]
    out = machine.handle(lc.BroadcastRefused(lc.TxRole.REFUND, RejectKind.NON_FINAL, "non-final"))
    assert out == [lc.Notify(lc.BroadcastNotAccepted(TXID, lc.TxRole.REFUND, RejectKind.NON_FINAL, "non-final"))]
    # A block while an attempt is under way starts no second one.
    assert machine.handle(lc.BlockConnected(NOW + 1200)) == [lc.CheckContract(TXID)]
    assert machine.handle(lc.BlockConnected(NOW + 1201)) == []
    assert machine.handle(lc.ContractStatus(known=True)) == [lc.Broadcast(RECORD.refund, lc.TxRole.REFUND)]
    assert machine.handle(lc.BroadcastAccepted(lc.TxRole.REFUND)) == [lc.Notify(lc.RefundBroadcast(TXID))]
    # In the mempool: kept until it confirms, and re-offered meanwhile.
    assert machine.handle(lc.ContractSpent(RECORD.refund, False, NOW + 1800)) == []
    assert machine.handle(lc.BlockConnected(NOW + 1800)) == [lc.CheckContract(TXID)]
    out = machine.handle(lc.ContractSpent(RECORD.refund, True, NOW + 2400))
    persist = of(lc.PersistTransition, out)[0]
    assert (persist.expected, persist.new, persist.changes["close_tx"]) == (S.EXPIRING, S.REFUNDED, RECORD.refund)
    assert lc.Unwatch(OutPoint(TXID, 0)) in out
    assert stored(machine, persist) == [lc.Notify(lc.ChannelRefunded(TXID, RECORD.refund))]
    assert machine.handle(lc.BlockConnected(NOW + 3000)) == []  # nothing due any more


def test_a_refund_the_node_already_has_counts_as_accepted():
    machine, _ = loaded(S.EXPIRING)
    assert machine.handle(lc.RefundDue(NOW)) == [lc.CheckContract(TXID)]
    machine.handle(lc.ContractStatus(known=True))
    out = machine.handle(lc.BroadcastRefused(lc.TxRole.REFUND, RejectKind.ALREADY_KNOWN, "txn-already-known"))
    assert out == [lc.Notify(lc.RefundBroadcast(TXID))]


def test_without_refunds_a_due_timer_does_nothing():
    machine, _ = loaded(refunds=False)
    assert machine.handle(lc.RefundDue(NOW)) == []
    assert machine.handle(lc.BlockConnected(NOW)) == []


# -- settlements ------------------------------------------------------------------------------


def test_settlement_in_close_stops_the_refund():
    machine, _ = loaded()
    out = machine.handle(lc.SettlementReceived(SETTLEMENT, NOW))
    assert out[0] == lc.CancelTimer()
    persist = out[1]
    assert (persist.expected, persist.new, persist.changes["close_tx"], persist.changes["note"]) == (
        S.OPEN, S.SETTLED, SETTLEMENT, "")
    assert stored(machine, persist) == [lc.Notify(lc.ChannelSettled(TXID, SETTLEMENT, False, ""))]
    # The same settlement seen on the chain later changes nothing; its confirmation ends the watch.
    assert machine.handle(lc.ContractSpent(SETTLEMENT, False, NOW)) == []
    assert machine.handle(lc.ContractSpent(SETTLEMENT, True, NOW)) == [lc.Unwatch(OutPoint(TXID, 0))]


def test_settlement_on_chain_is_checked_against_the_latest_change():
    """Payments lower c without the lifecycle: the spend carries the stored c, and a settlement
    that pays less than it is recorded with a note (it is not one we signed)."""
    machine, _ = loaded()
    out = machine.handle(lc.ContractSpent(SETTLEMENT, False, NOW, client_change=900_000))
    assert of(lc.PersistTransition, out)[0].changes["note"] == ""
    machine, _ = loaded()
    out = machine.handle(lc.ContractSpent(spend(899_999), True, NOW, client_change=900_000))
    persist = of(lc.PersistTransition, out)[0]
    assert "does not pay our change of 900000 sat" in persist.changes["note"]
    notify, = stored(machine, persist)
    assert notify.event.from_chain and notify.event.note == persist.changes["note"]
    # A different spend replaces a settlement seen only in a mempool.
    machine, _ = loaded(S.SETTLED, close_tx=SETTLEMENT)
    persist = of(lc.PersistTransition, machine.handle(lc.ContractSpent(OTHER_SETTLEMENT, True, NOW)))[0]
    assert (persist.expected, persist.new, persist.changes["close_tx"]) == (S.SETTLED, S.SETTLED, OTHER_SETTLEMENT)


# -- storing ----------------------------------------------------------------------------------


def test_events_wait_while_a_transition_is_stored():
    machine, _ = loaded()
    persist, = machine.handle(lc.RefundDue(NOW))
    assert not machine.idle
    assert machine.handle(lc.ContractSpent(SETTLEMENT, True, NOW)) == []  # held
    out = stored(machine, persist)
    # Then taken, on the stored record: EXPIRING -> SETTLED, and the refund attempt is over.
    persist2 = of(lc.PersistTransition, out)[0]
    assert (persist2.expected, persist2.new) == (S.EXPIRING, S.SETTLED)
    stored(machine, persist2)
    assert machine.idle and machine.record.state is S.SETTLED
    assert machine.handle(lc.ContractStatus(known=True)) == []  # the answer to the dropped attempt


def test_a_conflict_adopts_the_stored_record():
    machine, _ = loaded()
    machine.handle(lc.RefundDue(NOW))
    out = machine.handle(lc.TransitionConflict(replace(RECORD, state=S.SETTLED, close_tx=SETTLEMENT)))
    assert machine.record.state is S.SETTLED and machine.idle and not machine.refund_due
    assert of(lc.Notify, out)[0].event == lc.StoreTrouble(TXID, "stored state changed under us: expected open, "
                                                                "found settled")
    assert machine.handle(lc.BlockConnected(NOW)) == []


def test_a_failed_write_is_retried_on_the_next_block():
    machine, _ = loaded()
    machine.handle(lc.RefundDue(NOW))
    assert of(lc.Notify, machine.handle(lc.TransitionFailed("disk full")))
    persist, = machine.handle(lc.BlockConnected(NOW + 600))
    assert (persist.expected, persist.new) == (S.OPEN, S.EXPIRING)


def test_exhausted_channel_the_server_never_settles_is_refunded():
    """``paychan watch`` on a channel left noted as exhausted: no settlement ever appears, so
    from ``E + 300`` the refund (the whole value back, as the protocol allows) is broadcast and,
    once it confirms, ends the channel REFUNDED with the note cleared."""
    machine, effects = loaded(client_change=0, note=lc.EXHAUSTED_NOTE)
    assert lc.ArmTimer(RECORD.expiry + C.CLIENT_REFUND_DELAY) in effects
    persist, = machine.handle(lc.RefundDue(RECORD.expiry + C.CLIENT_REFUND_DELAY))
    assert (persist.expected, persist.new) == (S.OPEN, S.EXPIRING)
    assert stored(machine, persist)[-1] == lc.CheckContract(TXID)
    assert machine.handle(lc.ContractStatus(known=True)) == [lc.Broadcast(RECORD.refund, lc.TxRole.REFUND)]
    assert machine.handle(lc.BroadcastAccepted(lc.TxRole.REFUND)) == [lc.Notify(lc.RefundBroadcast(TXID))]
    out = machine.handle(lc.ContractSpent(RECORD.refund, True, RECORD.expiry + 1200, 0))
    persist = of(lc.PersistTransition, out)[0]
    assert (persist.expected, persist.new, persist.changes["note"]) == (S.EXPIRING, S.REFUNDED, "")
    stored(machine, persist)
    assert machine.record is not None and machine.record.state is S.REFUNDED and machine.record.note == ""
