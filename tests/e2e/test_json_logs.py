"""``twistd paychan --log-format json``: a real server's log file is one JSON object per line,
every line about a channel names the peer (the client's address while it is connected, ``-``
after), and the expiry it logs is ISO-8601."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest_twisted

from procs import RemoteClient, ServerProcess
from test_operator_settle import paychan
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.logfields import iso_time


@pytest_twisted.ensureDeferred
async def test_json_log_lines_name_the_peer(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", "--log-format", "json", "--verbose")
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open()
        settings = ClientSettings(channel_value=500_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        channel = await client.connect(settings, hashlib.sha256(b"json").digest())
        for _ in range(3):
            await channel.pay(5_000)
        channel.disconnect()
        await paychan("settle", "--data-dir", str(server.data_dir), "--all")
        record = await client.store.client_channel(channel.contract_txid)
    finally:
        await client.close()
        await server.stop()

    events = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert events and all("log_format" in e and "text" in e and e["time"].endswith("Z") for e in events)
    txid = display_hex(channel.contract_txid)
    about = [e for e in events if (e.get("log_format") or "").startswith("channel {txid}") and e.get("txid") == txid]
    formats = {e["log_format"] for e in about}
    assert any(": open ({how})" in f for f in formats) and any("payment +{increase}" in f for f in formats)
    assert any("connection closed" in f for f in formats) and any("settlement broadcast ({by})" in f for f in formats)
    for e in about:
        assert "peer" in e and f"(peer {e['peer']})" in e["text"], e
    connected = [e["peer"] for e in about if "open ({how})" in e["log_format"] or "payment +" in e["log_format"]]
    assert connected and all(re.fullmatch(r"127\.0\.0\.1:\d+", p) for p in connected)
    (stored,) = [e for e in about if "stored, value" in e["log_format"]]
    assert stored["expiry"] == iso_time(record.expiry)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored["expiry"])
