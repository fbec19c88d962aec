"""``GET /metrics`` read with prometheus_client's own parser, checked against the payments made."""

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from api_setup import ApiLoopback
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.wire.framing import encode_frame
from twisted_paychan.wire.messages import update_payment


def _samples(text):
    """{(name, frozenset(labels)): value} for every sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class _Garbage(Protocol):
    """Pays before any handshake (a message out of turn), and waits for the server to hang up."""

    def __init__(self):
        self.gone = defer.Deferred()

    def connectionMade(self):
        self.transport.write(encode_frame(update_payment(1000, b"\x30\x00")))

    def connectionLost(self, reason=None):
        self.gone.callback(None)


@pytest_twisted.ensureDeferred
async def test_metrics_match_the_payments_made(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        code, text = await net.call("GET", "/metrics")
        assert code == 200
        before = _samples(text)
        assert _value(before, "paychan_payments_total") == 0
        assert _value(before, "paychan_connected_clients") == 0

        conn = await net.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2,
                                                fee_rate=1000))
        amounts = [1000, 2500, 700, 4200]
        for amount in amounts:
            await conn.pay(amount)
        record = await net.server_store.server_channel(conn.contract_txid)

        code, text = await net.call("GET", "/metrics")
        m = _samples(text)
        # The initial payment inside PROVIDE_CONTRACT and every UPDATE_PAYMENT.
        assert _value(m, "paychan_payments_total") == len(amounts) + 1
        assert _value(m, "paychan_payments_received_sat_total") == record.best_value
        assert _value(m, "paychan_paid_to_us_sat") == record.best_value
        assert _value(m, "paychan_value_locked_sat") == 1_000_000
        assert _value(m, "paychan_channels", state="open") == 1
        assert _value(m, "paychan_channels", state="settled") == 0
        assert _value(m, "paychan_connected_clients") == 1
        # UPDATE_PAYMENT in to PAYMENT_ACK out: one observation per acknowledged update.
        assert _value(m, "paychan_payment_latency_seconds_count") == len(amounts)
        assert 0 < _value(m, "paychan_payment_latency_seconds_sum") < 10
        assert _value(m, "paychan_payment_latency_seconds_bucket", le="+Inf") == len(amounts)
        assert _value(m, "paychan_store_sync_seconds_count") >= len(amounts)
        assert _value(m, "paychan_chain_tip_height") == (await net.chain.tip()).height
        assert 0 < _value(m, "paychan_next_expiry_seconds") <= record.expiry - reactor.seconds() + 1

        # A peer that pays before its handshake gets ERROR{SYNTAX_ERROR}: counted, and its close by reason.
        garbage = _Garbage()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", net.port.getHost().port), garbage)
        await garbage.gone
        conn.disconnect()
        code, text = await net.call("GET", "/metrics")
        m = _samples(text)
        assert _value(m, "paychan_protocol_errors_total", code="SYNTAX_ERROR", direction="sent") == 1
        assert _value(m, "paychan_connections_closed_total", reason="remote_sent_invalid_message") == 1
        assert _value(m, "paychan_connected_clients") <= 1

        # A settlement: broadcast, then confirmed once mined.
        code, body = await net.call("GET", "/v1/channels")
        txid = body["channels"][0]["contract_txid"]
        code, _ = await net.call("POST", f"/v1/channels/{txid}/settle")
        assert code == 200
        net.chain.mine(1)
        for _ in range(50):  # the confirmation is stored a few reactor turns after the block
            code, text = await net.call("GET", "/metrics")
            m = _samples(text)
            if _value(m, "paychan_settlements_confirmed_total") == 1:
                break
        assert _value(m, "paychan_settlements_broadcast_total") == 1
        assert _value(m, "paychan_settlements_confirmed_total") == 1
        assert _value(m, "paychan_settlements_stuck_total") == 0
        assert _value(m, "paychan_channels", state="settled") == 1
        assert _value(m, "paychan_value_locked_sat") == 0
        assert _value(m, "paychan_channel_events_total", kind="settled") == 1
    finally:
        await net.stop()


def test_buckets_count_a_value_on_a_bound_in_that_bound_as_prometheus_does():
    from twisted_paychan.api.metrics import Buckets, ServerMetrics, Snapshot

    metrics = ServerMetrics()
    for value in (0.0001, 0.0001, 0.00011, 7.0):
        metrics.payment_latency.observe(value)
    m = _samples(metrics.render(Snapshot()).decode())
    assert _value(m, "paychan_payment_latency_seconds_bucket", le="0.0001") == 2
    assert _value(m, "paychan_payment_latency_seconds_bucket", le="0.00025") == 3
    assert _value(m, "paychan_payment_latency_seconds_bucket", le="5.0") == 3
    assert _value(m, "paychan_payment_latency_seconds_bucket", le="+Inf") == 4
    assert _value(m, "paychan_payment_latency_seconds_count") == 4
    assert abs(_value(m, "paychan_payment_latency_seconds_sum") - 7.00031) < 1e-9
    assert isinstance(metrics.store_sync, Buckets)
