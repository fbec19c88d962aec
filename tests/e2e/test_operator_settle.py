"""``paychan settle``: the operator settles a channel now, through the running server (its
connected client gets CLOSE with the settlement) or, with the server stopped, from the data
directory itself; Bitcoin Core's consensus code accepts and mines what it broadcasts."""

import hashlib
import json
import os
import subprocess
import sys

import pytest_twisted
from twisted.internet import threads

from procs import REPO, RemoteClient, ServerProcess, server_channels
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState


async def paychan(*argv: str) -> dict:
    def call() -> dict:
        done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv, "--json"], cwd=str(REPO),
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    return await threads.deferToThread(call)


@pytest_twisted.ensureDeferred
async def test_operator_settles_live_and_offline(tmp_path):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open(fund_blocks=2)
        settings = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        live = await client.connect(settings, hashlib.sha256(b"live").digest())
        for _ in range(5):
            await live.pay(10_000)
        idle = await client.connect(settings, hashlib.sha256(b"idle").digest())
        await idle.pay(20_000)
        idle.disconnect()

        # Through the running server: the connected client hears CLOSE{settlement}.
        answer = await paychan("settle", "--data-dir", str(server.data_dir), display_hex(live.contract_txid))
        (result,) = answer["results"]
        assert result["error"] is None and result["settlement_txid"]
        await live.channel.closed
        record = await client.store.client_channel(live.contract_txid)
        assert record.state is ClientChannelState.SETTLED and record.close_tx is not None

        # Server stopped: settle everything left from the data directory.
        await server.stop()
        answer = await paychan("settle", "--data-dir", str(server.data_dir), "--all")
        settled = {r["contract_txid"]: r for r in answer["results"]}
        assert settled[display_hex(idle.contract_txid)]["error"] is None
        await paychan("regtest-mine", "--data-dir", str(server.data_dir), "1")
        states = {r.contract_txid: r.state for r in await server_channels(server.data_dir)}
        assert states[idle.contract_txid] in (ServerChannelState.SETTLING, ServerChannelState.SETTLED)
        assert states[live.contract_txid] in (ServerChannelState.SETTLING, ServerChannelState.SETTLED)
    finally:
        await client.close()
        await server.stop()
