"""Every endpoint of the API against a real server paying over loopback TCP: with the token,
without it, with a wrong one, and with bad input."""

import pytest
import pytest_twisted

from api_setup import ApiLoopback
from twisted_paychan.channel.settings import ClientSettings, VersionSelector

ENDPOINTS = [
    ("GET", "/v1/info"), ("GET", "/v1/channels"), ("GET", "/v1/channels/" + "00" * 32),
    ("POST", "/v1/channels/" + "00" * 32 + "/settle"), ("POST", "/v1/channels/settle-all"),
    ("GET", "/v1/wallet/balance"), ("POST", "/v1/wallet/send"), ("GET", "/v1/events"), ("GET", "/v1/health"),
    ("GET", "/metrics"), ("POST", "/v1/backup"),
]


async def _open(net, value=1_000_000, payments=3):
    conn = await net.connect(ClientSettings(channel_value=value, versions=VersionSelector.VERSION_2, fee_rate=1000))
    for _ in range(payments):
        await conn.pay(1000)
    return conn


@pytest_twisted.ensureDeferred
async def test_every_endpoint_refuses_a_missing_or_wrong_token(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        for method, path in ENDPOINTS:
            for token in (None, "wrong", ""):
                code, body = await net.call(method, path, token=token)
                assert code == 401, (method, path, token)
                assert "token" in body["error"]
        # A token in the query string counts only for the event stream (EventSource).
        code, _ = await net.call("GET", "/v1/info?access_token=test-token-123", token=None)
        assert code == 401
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_info_channels_and_one_channel(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        conn = await _open(net)
        code, info = await net.call("GET", "/v1/info")
        assert code == 200
        assert info["network"] == "regtest"
        assert info["chain_tip"]["height"] == (await net.chain.tip()).height
        assert len(info["chain_tip"]["hash"]) == 64
        assert info["channels_by_state"]["open"] == 1 and info["channels"] == 1
        assert info["value_locked"] == 1_000_000
        record = await net.server_store.server_channel(conn.contract_txid)
        assert info["paid_to_us"] == record.best_value
        assert info["connected_clients"] == 1
        assert info["uptime"] >= 0 and info["version"]

        code, listed = await net.call("GET", "/v1/channels")
        assert code == 200 and len(listed["channels"]) == 1
        row = listed["channels"][0]
        txid = row["contract_txid"]
        assert row["paid"] == record.best_value and row["remaining"] == 1_000_000 - record.best_value
        assert row["state"] == "open" and row["connected"] is True
        assert row["peer"].startswith("127.0.0.1:")
        assert row["expiry_iso"].endswith("Z") and row["expires_in"] > 0
        assert row["settlement"] is None and row["confirmations"] is None
        assert listed["counts"]["open"] == 1

        code, one = await net.call("GET", f"/v1/channels/{txid}")
        assert code == 200 and one["contract_txid"] == txid and one["paid"] == record.best_value

        code, none = await net.call("GET", "/v1/channels?state=settled")
        assert code == 200 and none["channels"] == []
        code, both = await net.call("GET", "/v1/channels?state=settled&state=open")
        assert len(both["channels"]) == 1

        for path, status in (("/v1/channels?state=closed", 400), ("/v1/channels/xyz", 400),
                             ("/v1/channels/" + "ab" * 31, 400), ("/v1/channels/" + "00" * 32, 404),
                             ("/v1/nothing", 404), ("/nothing", 404)):  # "/" is the dashboard
            code, body = await net.call("GET", path)
            assert code == status, path
            assert body["error"]
        code, body = await net.call("POST", "/v1/info")
        assert code == 405 and "not allowed" in body["error"]
        code, body = await net.call("DELETE", f"/v1/channels/{txid}")
        assert code == 405
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_settle_one_then_conflict_then_settle_all(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        first = await _open(net)
        second = await _open(net, payments=1)
        code, body = await net.call("POST", "/v1/channels/" + "00" * 32 + "/settle")
        assert code == 404
        code, body = await net.call("POST", "/v1/channels/nothex/settle")
        assert code == 400
        code, body = await net.call("GET", "/v1/channels")
        txids = [r["contract_txid"] for r in body["channels"]]
        code, settled = await net.call("POST", f"/v1/channels/{txids[0]}/settle")
        assert code == 200, settled
        [row] = settled["results"]
        assert row["contract_txid"] == txids[0] and row["error"] is None and len(row["settlement_txid"]) == 64
        net.chain.mine(1)
        for _ in range(50):  # the confirmation is stored a few reactor turns after the block
            code, one = await net.call("GET", f"/v1/channels/{txids[0]}")
            if one["state"] == "settled":
                break
        assert one["state"] == "settled"
        assert one["settlement_txid"] == row["settlement_txid"] == one["settlement"]["txid"]
        assert one["confirmations"] == 1
        s = one["settlement"]
        assert s["to_client"] == one["value"] - one["paid"]
        assert s["fee"] > 0 and s["to_server"] == one["paid"] - s["fee"]
        code, conflict = await net.call("POST", f"/v1/channels/{txids[0]}/settle")
        assert code == 409 and conflict["state"] == "settled" and "nothing to settle" in conflict["error"]
        code, everything = await net.call("POST", "/v1/channels/settle-all")
        assert code == 200
        assert [(r["contract_txid"], r["error"]) for r in everything["results"]] == [(txids[1], None)]
        code, body = await net.call("GET", "/v1/channels/settle-all")
        assert code == 405
        del first, second
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_wallet_balance_and_health(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        code, balance = await net.call("GET", "/v1/wallet/balance")
        expected = await net.server_wallet.balance()
        assert code == 200
        assert (balance["confirmed"], balance["unconfirmed"], balance["total"]) == (
            expected.confirmed, expected.unconfirmed, expected.total)
        code, health = await net.call("GET", "/v1/health")
        assert code == 200 and health["status"] == "ok"
        assert health["checks"] == {"store": "ok", "wallet": "ok", "chain": "ok"}
        # A store that no longer answers makes the server unhealthy, with the reason.
        await net.server_store.close()
        code, health = await net.call("GET", "/v1/health")
        assert code == 503 and health["checks"]["store"] == "failed"
        assert "store" in health["error"]
    finally:
        net.server_store.close = lambda: _done()
        await net.stop()


def _done():
    from twisted.internet import defer

    return defer.succeed(None)


@pytest_twisted.ensureDeferred
async def test_extra_resources_are_served_beside_the_api(tmp_path):
    from twisted.web.static import Data

    net = ApiLoopback(tmp_path)
    net.extra = {b"": Data(b"<html>dashboard</html>", "text/html")}
    await net.start()
    try:
        code, page = await net.call("GET", "/", token=None)
        assert code == 200 and "dashboard" in page
        code, body = await net.call("GET", "/v1/info", token=None)
        assert code == 401
        code, body = await net.call("GET", "/metrics", token=None)
        assert code == 401
        code, body = await net.call("GET", "/elsewhere")
        assert code == 404 and body["error"]
    finally:
        await net.stop()


def test_a_chain_that_tracks_its_health_makes_the_server_unhealthy():
    from types import SimpleNamespace

    from twisted_paychan.api.service import tracked_chain_problem

    assert tracked_chain_problem(object()) is None
    health = SimpleNamespace(ok=True, state=SimpleNamespace(value="ok"), detail="")
    chain = SimpleNamespace(health_tracker=SimpleNamespace(health=health))
    problem = tracked_chain_problem(chain)
    assert problem() is None
    chain.health_tracker.health = SimpleNamespace(ok=False, state=SimpleNamespace(value="unreachable"),
                                                  detail="connection refused")
    assert problem() == "unreachable: connection refused"


@pytest_twisted.ensureDeferred
async def test_a_failing_backend_is_a_500_and_the_server_carries_on(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        conn = await _open(net, payments=1)
        net.server_wallet.close()  # the wallet's database is gone
        code, body = await net.call("GET", "/v1/wallet/balance")
        assert code == 500 and body["error"].startswith("internal error")
        code, info = await net.call("GET", "/v1/info")
        assert code == 200 and info["channels"] == 1
        await conn.pay(1000)  # the channel server is untouched
    finally:
        net.server_wallet.close = lambda: None
        await net.stop()


def test_json_body_for_the_post_endpoints():
    import io

    from twisted.web.test.requesthelper import DummyRequest

    from twisted_paychan.api.resources import MAX_BODY, ApiError, json_body

    def body(raw):
        request = DummyRequest([b"v1"])
        request.content = io.BytesIO(raw)
        return json_body(request)

    assert body(b'{"address": "bcrt1q...", "amount": "all", "fee_rate": 1000}')["amount"] == "all"
    assert str(body(b'{"amount": 0.5}')["amount"]) == "0.5"  # exact, never a float
    for bad in (b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"{" + b" " * MAX_BODY + b"}"):
        with pytest.raises(ApiError) as refused:
            body(bad)
        assert refused.value.status == 400


@pytest_twisted.ensureDeferred
async def test_wallet_send_withdraws_the_servers_income(tmp_path):
    """``POST /v1/wallet/send``: a settlement's payout withdrawn to another wallet's address,
    and every mistake answered with its status before anything is signed."""
    from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
    from twisted_paychan.bitcoin.txid import txid as txid_of
    from twisted_paychan.chain.types import from_display_hex

    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        conn = await _open(net, payments=3)
        code, settled = await net.call("POST", f"/v1/channels/{conn.contract_txid[::-1].hex()}/settle")
        assert code == 200 and settled["results"][0]["error"] is None
        net.chain.mine(1)
        await net.server_wallet.refresh()
        income = (await net.server_wallet.balance()).confirmed
        assert income > 0
        elsewhere = await net.client_wallet.new_address()

        for body, status, words in [
            ({"amount": 1000}, 400, "address"),
            ({"address": elsewhere, "amount": -5}, 400, "amount"),
            ({"address": elsewhere, "amount": True}, 400, "amount"),
            ({"address": elsewhere, "amount": 1000, "fee_rate": 10}, 400, "fee_rate"),
            ({"address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "amount": 1000}, 400, "not for regtest"),
            ({"address": elsewhere, "amount": income * 2}, 409, "insufficient funds"),
        ]:
            code, answer = await net.call("POST", "/v1/wallet/send", json=body)
            assert code == status and words in answer["error"], (body, answer)
        code, answer = await net.call("POST", "/v1/wallet/send", data=b"[1, 2]")
        assert code == 400

        code, sent = await net.call("POST", "/v1/wallet/send", json={"address": elsewhere, "amount": "all"})
        assert code == 200, sent
        assert sent["amount"] + sent["fee"] == income and sent["address"] == elsewhere
        raw = await net.chain.get_transaction(from_display_hex(sent["txid"]))
        assert raw is not None and txid_of(raw) == from_display_hex(sent["txid"])
        net.chain.mine(1)
        await net.server_wallet.refresh()
        assert (await net.server_wallet.balance()).total == 0
        script = address_to_script(elsewhere, REGTEST)
        assert sum(u.value for u in await net.chain.unspent_outputs(script)) == sent["amount"]
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_backup_answers_bad_requests(tmp_path):
    """``POST /v1/backup`` (the copy itself: tests/e2e/test_backup_restore.py): no data dir, a
    relative path, nothing to copy."""
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        code, body = await net.call("POST", "/v1/backup", json={"out_dir": str(tmp_path / "b")})
        assert code == 404 and "no backups" in body["error"]
        net.api.context.data_dir = str(tmp_path / "empty")
        code, body = await net.call("POST", "/v1/backup", json={"out_dir": "relative/dir"})
        assert code == 400 and "absolute" in body["error"]
        code, body = await net.call("POST", "/v1/backup", json={"out_dir": str(tmp_path / "b")})
        assert code == 409 and "no channel store or wallet" in body["error"]
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_pages_of_channels_and_totals_without_reading_the_history(tmp_path):
    """``?limit=&offset=`` pages the newest channels; ``/v1/info`` and ``/metrics`` (scraped
    every few seconds for months) ask the store for its aggregate, never for every record."""
    from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState

    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        store = net.server_store
        for n in range(1, 6):
            await store.add_server_channel(ServerChannelRecord(
                contract_txid=bytes([n]) * 32, version=2, contract=b"\x02\x00\x00\x00" + bytes([n]) * 60,
                value=100_000 * n, expiry=2_000_000_000, server_key=b"\x02" + bytes([n]) * 32,
                client_key=b"\x03" + bytes([n]) * 32, best_value=1_000 * n))
        await store.transition_server(bytes([2]) * 32, ServerChannelState.OPEN, ServerChannelState.SETTLING,
                                      settlement_tx=None)
        listed = []

        def counting(*args, **kw):
            listed.append(args or kw)
            return type(store).server_channels(store, *args, **kw)

        store.server_channels = counting
        code, info = await net.call("GET", "/v1/info")
        assert code == 200 and info["channels"] == 5 and info["paid_to_us"] == 15_000
        assert info["channels_by_state"]["settling"] == 1
        assert info["value_locked"] == 1_500_000
        code, scraped = await net.call("GET", "/metrics")
        assert code == 200 and "paychan_channels" in scraped
        assert listed == [], "the totals read every record"

        def txids(page):
            return [bytes.fromhex(r["contract_txid"])[0] for r in page["channels"]]

        code, page = await net.call("GET", "/v1/channels?limit=2")
        assert code == 200 and txids(page) == [4, 5] and page["counts"]["open"] == 4
        code, page = await net.call("GET", "/v1/channels?limit=2&offset=2")
        assert txids(page) == [2, 3]
        code, page = await net.call("GET", "/v1/channels?state=open&limit=2&offset=2")
        assert txids(page) == [1, 3]
        code, page = await net.call("GET", "/v1/channels?state=open&limit=2&offset=3")
        assert txids(page) == [1]
        code, page = await net.call("GET", "/v1/channels")
        assert txids(page) == [1, 2, 3, 4, 5]
        for bad in ("limit=-1", "limit=two", "offset=-3"):
            code, body = await net.call("GET", f"/v1/channels?{bad}")
            assert code == 400 and "non-negative" in body["error"], bad
    finally:
        await net.stop()
