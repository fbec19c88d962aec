"""One owner per channel (issue #14 item 1): a resume takes a channel over from the connection
that had it, and the new connection's machine starts from the latest stored b, even while the
previous connection has a payment being stored."""

from twisted.internet import defer

from channel_pair import Pair, result_of
from twisted_paychan.bitcoin.payment import sign_payment
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.wire import messages as m


def paid_channel():
    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(50_000)
    pair.pump()
    result_of(d)
    client.disconnect()
    pair.pump()
    return pair, txid


def slow_payments(pair):
    """The store makes payments durable one reactor turn later, as SQLite's batched commit does."""
    store = pair.server_store
    real = store.record_payment

    def record_payment(txid, best_value, signature):
        d = defer.Deferred()
        pair.clock.callLater(0, lambda: real(txid, best_value, signature).chainDeferred(d))
        return d

    store.record_payment = record_payment


class Peer:
    """A raw connection to the manager: what it was sent, how it closed."""

    def __init__(self, pair):
        self.sent = []
        self.closed = None
        self.channel = pair.channels.connection(None, self.sent.append, self._close)

    def _close(self, reason):
        self.closed = reason

    def types(self):
        return [msg.type for msg in self.sent]


def update(pair, txid, best_value):
    record = result_of(pair.server_store.server_channel(txid))
    script = ChannelScript(2, record.client_key, record.server_key, record.expiry)
    change = record.value - best_value
    return m.update_payment(change, sign_payment(pair.client_key, script, txid, change))


def test_second_resume_waits_for_the_payment_in_flight_and_sees_its_b():
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    slow_payments(pair)
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    first, second = Peer(pair), Peer(pair)
    # Each in one write: the resume and an update right behind it; the second raises b less.
    first.channel.message_received(resume)
    first.channel.message_received(update(pair, txid, stored_b + 100))
    second.channel.message_received(resume)
    second.channel.message_received(update(pair, txid, stored_b + 50))
    for _ in range(5):
        pair.clock.advance(0)
    # The first was taken over, but its payment was stored and acknowledged before it closed.
    assert first.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN, m.MT.PAYMENT_ACK, m.MT.CLOSE]
    # The second started from b + 100: its update would lower b, refused as §7.3 says.
    assert second.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN, m.MT.ERROR]
    assert second.sent[-1].error.code == m.ErrorCode.Value("BAD_TRANSACTION")
    # Refused by its machine, which saw the first payment, not by the store (issue #14: the
    # store's refusal used to escape as an unhandled failure, and the peer got only EOF).
    explanation = second.sent[-1].error.explanation
    assert f"payment would lower the server's value from {stored_b + 100} to {stored_b + 50}" in explanation
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 100


def test_a_connection_taken_over_stores_no_more_payments():
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    first, second = Peer(pair), Peer(pair)
    first.channel.message_received(resume)
    second.channel.message_received(resume)
    assert first.types()[-1] == m.MT.CLOSE and first.closed is not None
    second.channel.message_received(update(pair, txid, stored_b + 10))
    assert second.types()[-1] == m.MT.PAYMENT_ACK
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 10
