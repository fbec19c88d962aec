"""One owner per channel (issue #14 items 1 and 4): a resume's machine starts from the latest
stored b, even while the previous connection has a payment being stored; and a resume takes a
channel over from a live connection only once it proves the client key with a correctly signed
payment that does not lower b (until then it is on probation: told CHANNEL_OPEN, not attached)."""

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


def update(pair, txid, best_value, key=None):
    record = result_of(pair.server_store.server_channel(txid))
    script = ChannelScript(2, record.client_key, record.server_key, record.expiry)
    change = record.value - best_value
    return m.update_payment(change, sign_payment(key or pair.client_key, script, txid, change))


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
    # Issue #14 item 4 (this test used to expect the first closed at the second's resume): the
    # first keeps the channel, the second never proved the key with a payment that counts.
    assert first.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN, m.MT.PAYMENT_ACK]
    assert first.closed is None
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
    # Adapted to item 4: the resume alone no longer evicts; its signed payment does.
    assert first.closed is None and second.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN]
    second.channel.message_received(update(pair, txid, stored_b + 10))
    assert first.types()[-1] == m.MT.CLOSE and first.closed is not None
    assert second.types()[-1] == m.MT.PAYMENT_ACK
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 10
    first.channel.message_received(update(pair, txid, stored_b + 20))
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 10


def test_a_proving_resume_takes_over_after_the_holders_payment_in_flight_is_acknowledged():
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    slow_payments(pair)
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    first, second = Peer(pair), Peer(pair)
    first.channel.message_received(resume)
    first.channel.message_received(update(pair, txid, stored_b + 100))
    second.channel.message_received(resume)
    second.channel.message_received(update(pair, txid, stored_b + 150))
    for _ in range(5):
        pair.clock.advance(0)
    # Item 1 still holds: the first's payment is acknowledged before its CLOSE.
    assert first.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN, m.MT.PAYMENT_ACK, m.MT.CLOSE]
    assert second.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN, m.MT.PAYMENT_ACK]
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 150


def live_client_and_intruder():
    """A client paying on its live connection, and a second connection naming its contract."""
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    client, intruder = Peer(pair), Peer(pair)
    client.channel.message_received(resume)
    client.channel.message_received(update(pair, txid, stored_b + 10))
    intruder.channel.message_received(resume)
    return pair, txid, stored_b, client, intruder


def test_an_unauthenticated_resume_does_not_evict_the_paying_client():
    pair, txid, stored_b, client, intruder = live_client_and_intruder()
    # The intruder hears CHANNEL_OPEN (a stock client needs it before paying), but holds nothing.
    assert intruder.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN]
    client.channel.message_received(update(pair, txid, stored_b + 20))
    # Its payment signed by another key: BAD_TRANSACTION, and it is closed.
    stranger = result_of(pair.client_wallet.new_channel_key())
    intruder.channel.message_received(update(pair, txid, stored_b + 1000, key=stranger))
    assert intruder.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN, m.MT.ERROR]
    assert intruder.sent[-1].error.code == m.ErrorCode.Value("BAD_TRANSACTION")
    assert intruder.closed is not None
    # The client kept paying throughout, and still does.
    client.channel.message_received(update(pair, txid, stored_b + 30))
    assert client.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN] + [m.MT.PAYMENT_ACK] * 3
    assert client.closed is None
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 30


def test_a_resume_on_probation_cannot_settle_the_live_channel():
    pair, txid, stored_b, client, intruder = live_client_and_intruder()
    intruder.channel.message_received(m.close())
    pair.clock.advance(0)
    assert intruder.closed is not None and m.MT.CLOSE not in intruder.types()
    assert result_of(pair.server_store.server_channel(txid)).state.value == "open"
    client.channel.message_received(update(pair, txid, stored_b + 20))
    assert client.types()[-1] == m.MT.PAYMENT_ACK and client.closed is None


def test_a_replayed_older_payment_does_not_take_over():
    pair, txid, stored_b, client, intruder = live_client_and_intruder()
    # A signature for a b the client has already paid past (seen on the wire, say).
    intruder.channel.message_received(update(pair, txid, stored_b + 5))
    assert intruder.types()[-1] == m.MT.ERROR and intruder.closed is not None
    assert client.closed is None
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 10


def test_a_newcomer_whose_view_of_b_went_stale_is_refused_and_evicts_nobody():
    pair, txid, stored_b, client, intruder = live_client_and_intruder()
    # The holder pays after the newcomer read b; the newcomer's signed payment is above the
    # newcomer's b but it was told an older b: refused, resume again.
    client.channel.message_received(update(pair, txid, stored_b + 20))
    intruder.channel.message_received(update(pair, txid, stored_b + 15))
    assert intruder.types()[-1] == m.MT.ERROR
    assert intruder.sent[-1].error.code == m.ErrorCode.Value("BAD_TRANSACTION")
    assert client.closed is None
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 20


def test_a_client_whose_first_connection_is_half_open_reconnects_and_takes_over():
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    dead, fresh = Peer(pair), Peer(pair)
    dead.channel.message_received(resume)
    dead.channel.message_received(update(pair, txid, stored_b + 10))
    # The client's first TCP connection died without the server noticing (no connection_lost).
    fresh.channel.message_received(resume)
    assert fresh.types() == [m.MT.SERVER_VERSION, m.MT.CHANNEL_OPEN]
    fresh.channel.message_received(update(pair, txid, stored_b + 20))
    assert fresh.types()[-1] == m.MT.PAYMENT_ACK
    assert dead.closed is not None and dead.types()[-1] == m.MT.CLOSE
    fresh.channel.message_received(update(pair, txid, stored_b + 30))
    assert fresh.types()[-1] == m.MT.PAYMENT_ACK and fresh.closed is None
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b + 30


def test_a_resume_after_the_holder_is_gone_is_attached_at_once():
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    first, second = Peer(pair), Peer(pair)
    first.channel.message_received(resume)
    first.channel.connection_lost()
    second.channel.message_received(resume)
    second.channel.message_received(m.close())  # settles at once: nobody to protect
    pair.clock.advance(0)
    assert second.types()[-1] == m.MT.CLOSE and second.sent[-1].settlement.tx
    assert result_of(pair.server_store.server_channel(txid)).best_value == stored_b


def test_a_payment_of_nothing_for_the_stored_b_is_proof_enough():
    pair, txid = paid_channel()
    stored_b = result_of(pair.server_store.server_channel(txid)).best_value
    resume = m.client_version(2, previous_contract_hash=bytes(reversed(txid)))
    dead, fresh = Peer(pair), Peer(pair)
    dead.channel.message_received(resume)
    fresh.channel.message_received(resume)
    fresh.channel.message_received(update(pair, txid, stored_b))
    assert fresh.types()[-1] == m.MT.PAYMENT_ACK and dead.types()[-1] == m.MT.CLOSE
    fresh.channel.message_received(m.close())  # now it may settle
    pair.clock.advance(0)
    assert fresh.types()[-1] == m.MT.CLOSE and fresh.sent[-1].settlement.tx
