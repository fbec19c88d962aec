"""SIGKILL at a random point in a pipelined stream of payments (``--window`` / ``max_in_flight``),
on the client's side and on the server's, real processes both times. The client resumes from its
stored c, so its next payment covers whatever the server stored or acknowledged before the kill;
afterwards both records agree, and the settlement is accepted by Bitcoin Core's interpreter
(``bitcoin.consensus``) and mined."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
from typing import Any

import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import reactor, threads

from procs import REPO, RemoteClient, ServerProcess, server_channels
from test_kill_client import paychan, run
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.channel.errors import ChannelClosed
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.pipelined import pay_windowed

VALUE = 2_000_000
WINDOW = 32


def _settlement_is_valid(record: Any) -> bool:
    script = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
    return verify_input(record.settlement_tx, 0, script.script_pubkey, record.value)


@pytest_twisted.ensureDeferred
async def test_client_killed_in_a_pipelined_stream(tmp_path):
    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).choice(range(200, 1800, 200))  # progress is printed every 200
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client_dir = str(tmp_path / "client")
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    try:
        address = (await run("wallet", "--data-dir", client_dir, *chain, "--create", "new-address")).strip()
        await run("regtest-fund", *chain, address, "5000000")
        pay = ["pay", "--server", server.endpoint, *chain, "--data-dir", client_dir,
               "--value", str(VALUE), "--amount", "500", "--window", str(WINDOW)]

        def pay_and_kill() -> None:
            child = subprocess.Popen(paychan(*pay, "--count", "2000"), cwd=str(REPO), text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
            assert child.stderr is not None
            for line in child.stderr:
                if f"payment {kill_at}/2000" in line:  # progress: up to W more are in flight
                    child.send_signal(signal.SIGKILL)
                    break
            child.wait()
            assert child.returncode == -signal.SIGKILL, f"seed {seed}: the client was not killed"

        await threads.deferToThread(pay_and_kill)
        result = json.loads(await run(*pay, "--count", "40", "--settle", "--json"))
        assert result["resumed"] is True
        await run("regtest-mine", *chain, "1")
        await server.stop()

        (record,) = await server_channels(server.data_dir)
        assert record.best_value == result["channel_paid"], f"seed {seed}"
        assert result["channel_paid"] >= kill_at * 500 + 40 * 500
        settlement = CTransaction.deserialize(record.settlement_tx)
        assert settlement.vout[0].nValue == VALUE - result["channel_paid"]  # the client's change, in full
        assert _settlement_is_valid(record)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_server_killed_in_a_pipelined_stream(tmp_path):
    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).randrange(50, 400)
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client = RemoteClient(tmp_path, server)
    server_id = hashlib.sha256(b"kill-pipelined").digest()
    settings = ClientSettings(channel_value=VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000,
                              max_in_flight=WINDOW)
    try:
        await client.open()
        conn = await client.connect(settings, server_id)
        txid = conn.contract_txid
        acked = VALUE - conn.record.client_change  # the initial payment

        def count(i: int, ack: Any) -> None:
            nonlocal acked
            acked += ack.amount
            if i == kill_after:
                reactor.callLater(0, server.kill)  # lands with up to W payments in flight

        try:
            await pay_windowed(conn.pay, 3000, 500, None, WINDOW, count)
        except ChannelClosed:
            pass
        else:
            raise AssertionError(f"seed {seed}: the server was never killed")
        await conn.channel.closed

        await server.start()
        conn = await client.connect(settings, server_id)
        assert conn.resumed and conn.contract_txid == txid
        await pay_windowed(conn.pay, 20, 500, None, WINDOW)
        settlement = await conn.settle()
        assert isinstance(settlement, bytes)
        await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
        stored = await client.store.client_channel(txid)
        await server.stop()

        (record,) = await server_channels(server.data_dir)
        assert record.state in (ServerChannelState.SETTLING, ServerChannelState.SETTLED)
        assert record.settlement_tx == settlement
        # Every acknowledged payment is stored; what was in flight at the kill is at most W more.
        assert acked + 20 * 500 <= record.best_value <= acked + (WINDOW + 20) * 500, f"seed {seed}"
        # The client resumed from its stored c: both records agree on what was paid.
        assert stored.client_change == VALUE - record.best_value, f"seed {seed}"
        assert CTransaction.deserialize(settlement).vout[0].nValue == stored.client_change
        assert _settlement_is_valid(record)
    finally:
        await client.close()
        await server.stop()
