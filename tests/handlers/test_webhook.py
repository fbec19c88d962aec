"""The ``webhook:URL`` handler against a local twisted.web server, with a real server and client
on loopback TCP and the embedded chain: accept (the answer becomes PAYMENT_ACK info), refuse (a
non-2xx: ERROR{OTHER}, nothing acknowledged), timeout (on an injected clock)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import reactor, task

from hook_server import Hook, serve
from tcp_setup import Loopback
from twisted_paychan.chain.types import TxState, display_hex
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.channel.settings import ClientSettings
from twisted_paychan.handlers.log import peer_name
from twisted_paychan.handlers.webhook import WebhookClient, WebhookHandler, WebhookHandlerMaker

SETTINGS = ClientSettings(channel_value=1_000_000, fee_rate=1000)


async def _setup(tmp_path: Any, answer: Any, clock: Any = None, timeout: float = 10.0) -> tuple[Loopback, Hook, Any]:
    hook = Hook(answer)
    port, url = await serve(hook)
    net = Loopback(tmp_path)
    client = WebhookClient(reactor, url, clock=clock, timeout=timeout)
    net.factory.handler_factory = lambda address: WebhookHandler(client, peer_name(address))
    await net.start()
    return net, hook, port


def _acks_with_receipts(event: dict[str, Any]) -> Any:
    if event["event"] == "payment":
        return 200, f"receipt {event['total']}".encode()
    return 204, b""


@pytest_twisted.ensureDeferred
async def test_accepted_payments_carry_the_answer_as_ack_info_and_settle(tmp_path: Any) -> None:
    net, hook, port = await _setup(tmp_path, _acks_with_receipts)
    try:
        conn = await net.connect(SETTINGS)
        first = await conn.pay(2000, b"order-1")
        second = await conn.pay(3000)
        assert (first.amount, first.info) == (2000, b"receipt 3000")
        assert second.info == b"receipt 6000"
        settlement = await conn.settle()
        await hook.until(lambda events: bool(events) and events[-1]["event"] == "closed")
        txid = display_hex(conn.contract_txid)
        peer = hook.events[0]["peer"]
        assert peer.startswith("127.0.0.1:")
        assert hook.events == [
            {"event": "opened", "contract_txid": txid, "peer": peer},
            {"event": "payment", "contract_txid": txid, "peer": peer, "increase": 1000, "total": 1000, "info": None},
            {"event": "payment", "contract_txid": txid, "peer": peer, "increase": 2000, "total": 3000,
             "info": b"order-1".hex()},
            {"event": "payment", "contract_txid": txid, "peer": peer, "increase": 3000, "total": 6000, "info": None},
            {"event": "closed", "contract_txid": txid, "peer": peer, "reason": "CLIENT_REQUESTED_CLOSE"},
        ]
        # The money moved: the settlement is mined and pays the client its change.
        net.chain.mine(1)
        tx = CTransaction.deserialize(settlement)
        assert (await net.chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
        assert tx.vout[0].nValue == 1_000_000 - 6000
    finally:
        await port.stopListening()
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_a_non_2xx_answer_refuses_the_payment(tmp_path: Any) -> None:
    """ERROR{OTHER} and no PAYMENT_ACK. The refused payment was stored before the webhook was
    asked (spec §7.3) and the client stored its side before sending it: both records count it,
    and the settlement pays it (doc/handlers.md says so)."""
    def answer(event: dict[str, Any]) -> Any:
        if event["event"] == "payment" and event["total"] > 1000:
            return 402, b"no credit"
        return 200, b""

    net, hook, port = await _setup(tmp_path, answer)
    try:
        conn = await net.connect(SETTINGS)
        try:
            await conn.pay(2000)
        except ChannelClosed as e:
            assert e.reason is CloseReason.REMOTE_SENT_ERROR
            assert "payment not accepted: the webhook answered 402" in e.detail
        else:
            raise AssertionError("the refused payment was acknowledged")
        await hook.until(lambda events: bool(events) and events[-1]["event"] == "closed")
        assert hook.events[-1]["reason"] == "UPDATE_PAYMENT_FAILED"
        server = await net.server_store.server_channel(conn.contract_txid)
        client = await net.client_store.client_channel(conn.contract_txid)
        assert server.best_value == 3000 and client.value - client.client_change == 3000
        assert server.state is ServerChannelState.OPEN
    finally:
        await port.stopListening()
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_no_answer_within_the_timeout_refuses_the_payment(tmp_path: Any) -> None:
    clock = task.Clock()
    net, hook, port = await _setup(tmp_path, lambda e: None if e["event"] == "payment" and e["total"] > 1000
                                   else (200, b""), clock=clock, timeout=5.0)
    try:
        conn = await net.connect(SETTINGS)
        paying = conn.pay(500)
        await hook.until(lambda events: any(e.get("total") == 1500 for e in events))
        clock.advance(4.9)
        assert not paying.called
        clock.advance(0.1)
        try:
            await paying
        except ChannelClosed as e:
            assert "the webhook did not answer within 5 s" in e.detail
        else:
            raise AssertionError("a payment the webhook never answered was acknowledged")
    finally:
        await port.stopListening()
        await net.stop()


def test_the_maker_checks_its_url() -> None:
    maker = WebhookHandlerMaker()
    maker.check("https://example.org/hook")
    for bad in (None, "", "ftp://x/", "example.org/hook"):
        try:
            maker.check(bad)
        except ValueError as e:
            assert "webhook:URL" in str(e)
        else:
            raise AssertionError(bad)
