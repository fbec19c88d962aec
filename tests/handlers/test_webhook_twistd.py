"""``twistd paychan --handler webhook:URL`` in a real process: the handler is found by the plugin
scan, made on twistd's reactor, and its answers reach the client."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest_twisted

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))

from hook_server import Hook, serve  # noqa: E402
from procs import RemoteClient, ServerProcess, server_channels  # noqa: E402
from twisted_paychan.channel.errors import ChannelClosed  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings  # noqa: E402


@pytest_twisted.ensureDeferred
async def test_twistd_with_the_webhook_handler(tmp_path: Path) -> None:
    def answer(event: dict[str, Any]) -> Any:
        if event["event"] == "payment" and event["increase"] >= 5000:
            return 403, b""
        return 200, f"ok {event.get('total')}".encode()

    hook = Hook(answer)
    port, url = await serve(hook)
    server = ServerProcess(tmp_path / "server", "--handler", f"webhook:{url}")
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open()
        conn = await client.connect(ClientSettings(channel_value=200_000, fee_rate=1000), b"W" * 32)
        assert (await conn.pay(2000)).info == b"ok 3000"
        try:
            await conn.pay(5000)
        except ChannelClosed as e:
            assert "the webhook answered 403" in e.detail
        else:
            raise AssertionError("a refused payment was acknowledged")
        await hook.until(lambda events: bool(events) and events[-1]["event"] == "closed")
    finally:
        await client.close()
        await server.stop()
        await port.stopListening()
    assert [(e["event"], e.get("total"), e.get("reason")) for e in hook.events] == [
        ("opened", None, None), ("payment", 1000, None), ("payment", 3000, None), ("payment", 8000, None),
        ("closed", None, "UPDATE_PAYMENT_FAILED")]
    [record] = await server_channels(server.data_dir)
    assert record.best_value == 8000  # the refused payment is stored (doc/handlers.md)
