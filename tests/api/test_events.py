"""``GET /v1/events``: live channel events, and what a client that reconnects with
``Last-Event-ID`` missed while it was away."""

import pytest_twisted
from twisted.internet.task import Clock

from api_setup import TOKEN, ApiLoopback
from sse_client import open_stream
from twisted_paychan.api.events import EventLog
from twisted_paychan.channel.server_lifecycle_events import ChannelEvent, ChannelEventKind
from twisted_paychan.channel.settings import ClientSettings, VersionSelector

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest_twisted.ensureDeferred
async def test_stream_and_resume_with_last_event_id(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        first = await open_stream(net.url, "/v1/events", AUTH)
        conn = await net.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2,
                                                fee_rate=1000))
        await conn.pay(1000)
        await conn.pay(2000)
        events = await first.wait_for(4)  # opened, the initial payment, two payments
        assert first.status == 200
        kinds = [data["kind"] for _, _, data in events]
        assert sorted(kinds) == ["opened", "payment", "payment", "payment"]
        txid = events[0][2]["contract_txid"]
        assert all(data["contract_txid"] == txid for _, _, data in events)
        assert [data["increase"] for _, _, data in events if data["kind"] == "payment"][-2:] == [1000, 2000]
        assert all(event_id == data["id"] for event_id, _, data in events)
        last_seen = events[-1][0]
        first.transport.loseConnection()

        # Missed while away: two payments, then the close of the connection.
        await conn.pay(3000)
        await conn.pay(4000)
        conn.disconnect()

        again = await open_stream(net.url, "/v1/events", {**AUTH, "Last-Event-ID": last_seen})
        missed = await again.wait_for(2)
        assert [d["increase"] for _, _, d in missed[:2]] == [3000, 4000]
        assert all(d["kind"] == "payment" for _, _, d in missed[:2])

        # A browser's EventSource gives the token and the last id in the query string.
        browser = await open_stream(net.url, f"/v1/events?access_token={TOKEN}&last_event_id={last_seen}", {})
        replayed = await browser.wait_for(2)
        assert [d["increase"] for _, _, d in replayed[:2]] == [3000, 4000]

        # No token, no stream.
        refused = await open_stream(net.url, "/v1/events", {"Last-Event-ID": last_seen})
        await refused.ended
        assert refused.status == 401 and refused.events == []
        for reader in (again, browser):
            reader.transport.loseConnection()
    finally:
        await net.stop()


def _event(n):
    return ChannelEvent(ChannelEventKind.PAYMENT, bytes(32), increase=n, total=n)


def test_replay_buffer_is_bounded_and_says_when_events_were_lost():
    log = EventLog(Clock(), capacity=3, boot="b00t")
    for n in range(1, 6):
        log.publish(_event(n))
    assert log.since(None) == (False, [])  # a new stream starts from now
    lost, events = log.since("b00t-4")
    assert not lost and [e.seq for e in events] == [5]
    lost, events = log.since("b00t-1")  # 2 is gone: the client is told
    assert lost and [e.seq for e in events] == [3, 4, 5]
    lost, events = log.since("b00t-5")
    assert not lost and events == []
    lost, events = log.since("other-run-2")  # an id from an earlier run: all this run still has
    assert lost and [e.seq for e in events] == [3, 4, 5]
    for junk in ("b00t-x", "b00t-99", "garbage"):
        lost, events = log.since(junk)
        assert lost and [e.seq for e in events] == [3, 4, 5]


def test_a_broken_listener_does_not_stop_the_others():
    log = EventLog(Clock(), boot="b")
    heard = []

    def broken(event):
        raise RuntimeError("boom")

    log.listen(broken)
    log.listen(heard.append)
    log.publish(_event(1))
    assert [e.seq for e in heard] == [1]
