"""``ClientSettings.reply_timeout``: a PAYMENT_ACK, or the server's CLOSE after ours, that does
not come in time fails the waiting Deferred with ChannelClosed naming the timeout, closes the
connection, and leaves the channel stored for a resume."""

from __future__ import annotations

from channel_pair import Pair, failure_of, result_of
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector

SETTINGS = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000, reply_timeout=30)


def opened() -> tuple[Pair, object, bytes]:
    pair = Pair()
    client = pair.connect(SETTINGS)
    txid = result_of(client.opened).contract_txid
    return pair, client, txid


def test_payment_ack_that_never_comes():
    pair, client, txid = opened()
    d = client.pay(5000)  # stored and sent; the server never gets it (nothing is pumped)
    pair.clock.advance(29)
    assert not d.called
    pair.clock.advance(1)
    f = failure_of(d)
    assert f.check(ChannelClosed) and f.value.reason is CloseReason.CONNECTION_CLOSED
    assert "no PAYMENT_ACK from the server within 30 s (reply_timeout)" in str(f.value)
    assert pair.client_closed is CloseReason.CONNECTION_CLOSED
    assert result_of(client.closed) is CloseReason.CONNECTION_CLOSED
    record = result_of(pair.client_store.client_channel(txid))
    assert record.state is ClientChannelState.OPEN and record.client_change == 1_000_000 - 1000 - 5000
    # The payment was lost on the way; the server sees the connection end. The channel resumes
    # on the next connection, and its next payment carries the lost one too.
    pair.to_server.clear()
    pair.pump()
    again = pair.connect(SETTINGS, resume=record)
    assert result_of(again.opened).resumed
    d = again.pay(1000)
    pair.pump()
    assert result_of(d).amount == 1000


def test_an_answer_in_time_cancels_the_timer():
    pair, client, _ = opened()
    d = client.pay(5000)
    pair.pump()
    result_of(d)
    pair.clock.advance(3600)  # nothing is waiting: nothing times out
    assert pair.client_closed is None
    assert not pair.clock.getDelayedCalls() or all(
        call.getTime() > pair.clock.seconds() for call in pair.clock.getDelayedCalls())


def test_close_that_never_comes():
    pair, client, txid = opened()
    settled = client.settle()  # our CLOSE is never delivered
    pair.clock.advance(30)
    f = failure_of(settled)
    assert f.check(ChannelClosed) and "no CLOSE from the server within 30 s (reply_timeout)" in str(f.value)
    assert pair.client_closed is CloseReason.CONNECTION_CLOSED
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.OPEN


def test_none_waits_forever():
    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2,
                                         fee_rate=1000, reply_timeout=None))
    result_of(client.opened)
    d = client.pay(5000)
    pair.clock.advance(86_400)
    assert not d.called and pair.client_closed is None


def test_each_payment_gets_the_whole_timeout():
    """The deadline moves with every payment (one timer, re-armed when it fires early): a
    payment sent 20 s after an answered one still has its own 30 s."""
    pair, client, _ = opened()
    first = client.pay(1000)
    pair.pump()
    result_of(first)
    pair.clock.advance(20)
    second = client.pay(1000)  # never delivered
    pair.clock.advance(10)  # the first payment's deadline: the timer fires and waits on
    assert not second.called and pair.client_closed is None
    pair.clock.advance(19)
    assert not second.called
    pair.clock.advance(1)
    assert failure_of(second).check(ChannelClosed)
    assert pair.client_closed is CloseReason.CONNECTION_CLOSED
    assert not pair.clock.getDelayedCalls() or all(
        call.getTime() > pair.clock.seconds() for call in pair.clock.getDelayedCalls())
