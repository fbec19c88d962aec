"""``paychan info|channels|settle|wallet balance`` through a running ``twistd paychan``'s API
(found from ``DATA_DIR/api.json`` and its token file), and offline on the files once it stops or
when what it left behind after a crash points at nobody."""

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest_twisted
from twisted.internet import threads

from procs import REPO, RemoteClient, ServerProcess, free_port
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


async def paychan(*argv: str, json_mode: bool = True, code: int = 0):
    def call():
        done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv, *(["--json"] if json_mode else [])],
                              cwd=str(REPO), capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout) if json_mode else done.stdout

    return await threads.deferToThread(call)


@pytest_twisted.ensureDeferred
async def test_cli_through_the_api_then_offline(tmp_path):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client = RemoteClient(tmp_path, server)
    data = str(server.data_dir)
    try:
        cookie, advertised = server.data_dir / "api.cookie", server.data_dir / "api.json"
        assert stat.S_IMODE(cookie.stat().st_mode) == 0o600 and stat.S_IMODE(advertised.stat().st_mode) == 0o600
        api = json.loads(advertised.read_text())
        assert api["url"].startswith("http://127.0.0.1:") and api["token_file"] == str(cookie)

        await client.open(fund_blocks=2)
        settings = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        live = await client.connect(settings, hashlib.sha256(b"live").digest())
        for _ in range(3):
            await live.pay(10_000)
        txid = display_hex(live.contract_txid)

        info = await paychan("info", "--data-dir", data)
        assert info["running"] is True and info["network"] == "regtest"
        assert info["channels_by_state"]["open"] == 1 and info["paid_to_us"] > 30_000
        assert info["api"] == api["url"] and info["connected_clients"] == 1
        human = await paychan("info", "--data-dir", data, json_mode=False)
        assert "running" in human and "paid to us:" in human

        listed = await paychan("channels", "--data-dir", data)
        (row,) = listed["channels"]
        assert row["contract_txid"] == txid and row["peer"].startswith("127.0.0.1:") and row["state"] == "open"
        assert listed["counts"] == {"server": {"open": 1}}
        table = (await paychan("channels", "--data-dir", data, json_mode=False)).splitlines()
        assert table[0] == "1 channel(s), from the running server"
        header = next(line for line in table if line.startswith("SIDE"))
        assert header.split() == ["SIDE", "CONTRACT", "V", "STATE", "VALUE", "PAID", "REMAINING", "EXPIRES", "PEER"]
        line = next(line for line in table if line.startswith("server "))
        assert line.index(txid) == header.index("CONTRACT")  # aligned under its header

        balance = await paychan("wallet", "--data-dir", data, "balance")
        assert set(balance) >= {"confirmed", "unconfirmed", "total"}
        # A withdrawal goes to the running server's wallet too (POST /v1/wallet/send): nothing
        # settled yet, so the server's own words come back.
        refused = await threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "twisted_paychan.cli", "wallet", "--data-dir", data, "send",
                             "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "all"],
            cwd=str(REPO), capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith("paychan: error: the server answered 409: insufficient funds"), refused.stderr

        # Settle through the API: one unknown channel is the user's error, the live one settles.
        await paychan("settle", "--data-dir", data, "00" * 32, code=1)
        settled = await paychan("settle", "--data-dir", data, txid)
        (result,) = settled["results"]
        assert result["error"] is None and result["settlement_txid"]
        await live.channel.closed
    finally:
        await client.close()
        await server.stop()

    # Stopped: the files are gone, and the commands read the store.
    assert not (server.data_dir / "api.json").exists() and not (server.data_dir / "api.cookie").exists()
    info = await paychan("info", "--data-dir", data)
    assert info["running"] is False and info["channels"] == 1
    listed = await paychan("channels", "--data-dir", data)
    assert "peer" not in listed["channels"][0]

    # What a crashed server leaves behind points at nobody: the commands work offline.
    (server.data_dir / "api.cookie").write_text("stale\n")
    (server.data_dir / "api.json").write_text(json.dumps({"url": f"http://127.0.0.1:{free_port()}",
                                                          "token_file": str(server.data_dir / "api.cookie")}))
    info = await paychan("info", "--data-dir", data)
    assert info["running"] is False
