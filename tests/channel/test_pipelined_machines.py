"""Pipelined payments in the sans-IO machines: the server stores a run of updates ahead of their
turn and acknowledges them in order; a bad one, or any other message, waits its turn; the client
signs each payment on the c of the one before and sends each only once its c is stored."""

from __future__ import annotations

import pytest

from check_matrix_helpers import SELECTOR, VALUE, client_open, of_kind, sent_types, server_open
from twisted_paychan.channel.settings import ClientSettings
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.errors import ChannelUsageError, CloseReason
from twisted_paychan.channel.server import ServerStep
from twisted_paychan.constants import MAX_PAYMENTS_IN_FLIGHT
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.messages import MessageType as MT

NOW = 1_700_000_000


def _first_payment_stored(s):
    """The connection's first payment, stored and acknowledged: pipelining is on from then."""
    s.client_change -= 1000
    assert [type(e) for e in s.receive(s.update(s.client_change))] == [fx.StorePayment]
    out = s.machine.payment_stored()
    assert [type(e) for e in out] == [fx.NotifyPayment]
    assert sent_types(s.machine.payment_acknowledged(None)) == [MT.PAYMENT_ACK]


def _updates(s, count):
    out = []
    for _ in range(count):
        s.client_change -= 1000
        out.append(s.update(s.client_change))
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_server_stores_a_run_of_updates_at_once_and_acks_each_in_order(version):
    s = server_open(version)
    _first_payment_stored(s)
    updates = _updates(s, 5)
    stores = [s.receive(u) for u in updates]
    # Every one goes to the store as it arrives, the first as the current payment.
    assert all([type(e) for e in out] == [fx.StorePayment] for out in stores)
    assert [out[0].best_value for out in stores] == [s.value - (s.client_change + 1000 * (4 - i)) for i in range(5)]
    acks = []
    for _ in range(5):
        out = s.machine.payment_stored()
        for e in of_kind(out, fx.NotifyPayment):
            acks += sent_types(s.machine.payment_acknowledged(None))
    # The first's completion led to its NotifyPayment; the others' completions were noted, and
    # each ack drained the next stored one.
    assert acks == [MT.PAYMENT_ACK] * 5
    assert s.step is ServerStep.CHANNEL_OPEN
    assert s.machine.record.best_value == s.value - s.client_change


def test_server_answers_a_bad_update_in_its_turn_after_the_acks_before_it():
    s = server_open(2)
    _first_payment_stored(s)
    good = _updates(s, 2)
    s.client_change += 500  # goes back on the last one: refused, in its turn
    bad = s.update(s.client_change)
    assert [type(e) for e in s.receive(good[0])] == [fx.StorePayment]
    assert [type(e) for e in s.receive(good[1])] == [fx.StorePayment]
    assert s.receive(bad) == []  # queued as it came, not stored
    out = s.machine.payment_stored()
    notify = of_kind(out, fx.NotifyPayment)
    assert len(notify) == 1
    assert s.machine.payment_stored() == []  # the second one's store: noted for its turn
    out = s.machine.payment_acknowledged(None)
    assert sent_types(out) == [MT.PAYMENT_ACK]  # the first ack; the second is up to the application
    out = s.machine.payment_acknowledged(None)
    assert sent_types(out) == [MT.PAYMENT_ACK, MT.ERROR]
    assert s.step is ServerStep.CLOSED


def test_server_connection_lost_with_updates_stored_ahead():
    s = server_open(1)
    _first_payment_stored(s)
    for u in _updates(s, 3):
        s.receive(u)
    assert [type(e) for e in s.machine.connection_lost()] == [fx.Close]
    for _ in range(3):  # the stores still complete; nothing more is sent
        assert sent_types(s.machine.payment_stored()) == []
    assert s.step is ServerStep.CLOSED


def test_server_takes_the_updates_queued_behind_the_first_payment():
    s = server_open(2)
    first, *rest = _updates(s, 4)
    assert [type(e) for e in s.receive(first)] == [fx.StorePayment]
    assert all(s.receive(u) == [] for u in rest)  # the first may be a resume's proof: queued
    out = s.machine.payment_stored()
    # Stored now, all three together, before the first one's application call.
    assert [type(e) for e in out] == [fx.StorePayment] * 3 + [fx.NotifyPayment]


def test_server_refuses_more_payments_in_flight_than_it_takes():
    s = server_open(2)
    _first_payment_stored(s)
    s.receive(_updates(s, 1)[0])  # the current one
    out = []
    for u in _updates(s, MAX_PAYMENTS_IN_FLIGHT + 1):
        out = s.receive(u)
        if s.step is ServerStep.CLOSED:
            break
    assert sent_types(out) == [MT.ERROR]


def test_client_window_signs_on_the_previous_change_and_sends_in_order():
    c = client_open(2, settings=ClientSettings(channel_value=VALUE, versions=SELECTOR[2], fee_rate=1000,
                                               max_in_flight=3))
    start = c.machine.record.client_change
    stores = [c.machine.pay(100, None, NOW) for _ in range(3)]
    assert [e[0].client_change for e in stores] == [start - 100, start - 200, start - 300]
    with pytest.raises(ChannelUsageError):
        c.machine.pay(100, None, NOW)
    sent = [c.machine.change_stored() for _ in range(3)]
    assert [s[0].message.update_payment.client_change_value for s in sent] == [start - 100, start - 200, start - 300]
    acks = [c.receive(m.payment_ack()) for _ in range(3)]
    assert [type(a[0]) for a in acks] == [fx.PaymentAcked] * 3
    assert c.receive(m.payment_ack()) == []  # nothing in flight: ignored
    assert c.machine.record.client_change == start - 300


def test_client_error_with_payments_in_flight_closes():
    c = client_open(2, settings=ClientSettings(channel_value=VALUE, versions=SELECTOR[2], fee_rate=1000,
                                               max_in_flight=4))
    for _ in range(4):
        c.machine.pay(10, None, NOW)
    c.machine.change_stored()
    out = c.receive(m.error(1, "no"))
    assert [e.reason for e in of_kind(out, fx.Close)] == [CloseReason.REMOTE_SENT_ERROR]
    assert c.machine.change_stored() == []  # a later completion sends nothing


def test_client_settle_waits_for_the_payments_being_stored():
    """settle() right after pay(): the CLOSE leaves after the UPDATE_PAYMENT whose c was being
    stored, as when the effect runner held everything back behind the store."""
    c = client_open(2, settings=ClientSettings(channel_value=VALUE, versions=SELECTOR[2], fee_rate=1000,
                                               max_in_flight=2))
    c.machine.pay(100, None, NOW)
    c.machine.pay(100, None, NOW)
    assert c.machine.settle() == []
    with pytest.raises(ChannelUsageError):
        c.machine.pay(100, None, NOW)
    assert sent_types(c.machine.change_stored()) == [MT.UPDATE_PAYMENT]
    assert sent_types(c.machine.change_stored()) == [MT.UPDATE_PAYMENT, MT.CLOSE]
