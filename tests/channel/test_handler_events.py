"""What an application handler hears, and in which order (doc/channels.md, "What the handler
hears"): ``channel_opened`` first, then one ``payment_received`` per stored increase of b (the
initial payment included), then ``channel_closed`` last, also for a payment that was stored
after the connection was lost (a webhook that counts payments must see every stored one)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from channel_pair import Pair, result_of
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ClientSettings, ServerSettings
from twisted_paychan.net.server_channel import IServerHandler
from zope.interface import implementer


@implementer(IServerHandler)
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def channel_opened(self, contract_txid: bytes) -> None:
        self.events.append(("opened", contract_txid))

    def payment_received(self, contract_txid: bytes, increase: int, total: int, info: Any) -> None:
        self.events.append(("payment", increase, total))

    def channel_closed(self, reason: CloseReason) -> None:
        self.events.append(("closed", reason))


SETTINGS = ClientSettings(channel_value=1_000_000, fee_rate=1000)


def test_opened_then_the_initial_payment_then_payments_then_closed() -> None:
    pair = Pair()
    handler = Recorder()
    client = pair.connect(SETTINGS, handler=handler)
    txid = result_of(client.opened).contract_txid
    d = client.pay(500)
    pair.pump()
    result_of(d)
    client.disconnect()
    pair.pump()
    assert handler.events == [("opened", txid), ("payment", 1000, 1000), ("payment", 500, 1500),
                              ("closed", CloseReason.CONNECTION_CLOSED)]


def test_a_payment_stored_after_the_connection_was_lost_is_heard_before_closed() -> None:
    """The gap of issue 11: the payment is durable (and will be settled), so the application
    hears of it, before ``channel_closed``; there is no PAYMENT_ACK to send."""
    pair = Pair()
    handler = Recorder()
    client = pair.connect(SETTINGS, handler=handler)
    txid = result_of(client.opened).contract_txid
    store = pair.server_store
    held: list[defer.Deferred[None]] = []
    real = store.record_payment

    def slow_record(contract_txid: bytes, b: int, sig: bytes) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        real(contract_txid, b, sig).addBoth(lambda r: held.append(d) or r)
        return d

    store.record_payment = slow_record  # type: ignore[method-assign]
    client.pay(700)
    pair.pump()  # the update reaches the server, whose store has not answered yet
    assert held and handler.events[-1] == ("payment", 1000, 1000)
    assert pair.server is not None
    pair.server.connection_lost()
    assert handler.events[-1] == ("payment", 1000, 1000)  # closed waits for the store
    held[0].callback(None)
    assert handler.events[-2:] == [("payment", 700, 1700), ("closed", CloseReason.CONNECTION_CLOSED)]
    assert result_of(store.server_channel(txid)).best_value == 1700


def test_an_exhausting_initial_payment_is_heard_after_opened() -> None:
    pair = Pair(ServerSettings(fee_rate=1000, min_payment=100_000, min_channel_size=100_000))
    handler = Recorder()
    pair.connect(ClientSettings(channel_value=100_000, max_min_payment=100_000, fee_rate=1000), handler=handler)
    assert [e[0] for e in handler.events] == ["opened", "payment", "closed"]
    assert handler.events[1] == ("payment", 100_000, 100_000)
    assert handler.events[2] == ("closed", CloseReason.CHANNEL_EXHAUSTED)


def test_a_close_reason_prints_by_name() -> None:
    reason = CloseReason.UPDATE_PAYMENT_FAILED
    assert str(reason) == f"{reason}" == "%s" % reason == "UPDATE_PAYMENT_FAILED"
    assert f"{reason:>23}" == "  UPDATE_PAYMENT_FAILED"
    assert reason == 9 and int(reason) == 9  # still the wire-compatible number


@implementer(IServerHandler)
class RefusesEverything(Recorder):
    def payment_received(self, contract_txid: bytes, increase: int, total: int, info: Any) -> None:
        super().payment_received(contract_txid, increase, total, info)
        raise RuntimeError("the webhook could not be reached: connection refused")


def test_a_refused_initial_payment_is_one_warning_not_a_traceback() -> None:
    """The initial payment cannot be refused (it is stored, and no ack answers it): a handler
    that refuses it anyway (a webhook that is down) is worth one line naming the reason, not a
    logged failure with a traceback; the channel opens."""
    from twisted.logger import globalLogPublisher, LogLevel

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        pair = Pair()
        handler = RefusesEverything()
        client = pair.connect(SETTINGS, handler=handler)
        txid = result_of(client.opened).contract_txid
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert handler.events == [("opened", txid), ("payment", 1000, 1000)]
    warned = [e for e in seen if "no ack to send" in e.get("log_format", "")]
    assert len(warned) == 1 and warned[0]["log_level"] == LogLevel.warn
    assert warned[0]["why"] == "the webhook could not be reached: connection refused"
    assert not [e for e in seen if "log_failure" in e]
