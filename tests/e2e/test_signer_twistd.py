"""Issue 18, the remote signer, in real processes: ``paychan signer`` holds the keys, ``twistd
paychan --wallet signer:unix:SOCKET`` holds none. A channel opens (v1 and v2), is paid and
settles, the settlement confirms on the embedded node (Bitcoin Core's consensus engine) and
passes its script interpreter; no file of the server's data directory holds a byte of the
signer's secrets; with the signer stopped, payments flow, a new channel is refused with
ERROR{OTHER}, health and metrics say why, and the settlement goes out once it is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import reactor, task

from procs import REPO, RemoteClient, ServerProcess, server_channels
from signer_proc import SignerProcess, api_get
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


def _no_secret_in(directory: Path, secrets: list[bytes]) -> None:
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{path} holds a secret of the signer's"
            assert secret.hex().encode() not in data, f"{path} holds a secret of the signer's, in hex"


async def _confirmed(client: RemoteClient, settlement: bytes) -> CTransaction:
    await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
    tx = CTransaction.deserialize(settlement)
    assert (await client.chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
    return tx


@pytest.mark.parametrize("version", [1, 2])
@pytest_twisted.ensureDeferred
async def test_a_channel_settles_with_the_keys_in_the_signer_and_none_in_the_server(tmp_path: Path,
                                                                                     version: int) -> None:
    signer = SignerProcess(tmp_path / "signer")
    await signer.start()
    server = ServerProcess(tmp_path / "server", "--wallet", signer.wallet_option)
    client = RemoteClient(tmp_path, server)
    try:
        await server.start()
        await client.open()
        selector = VersionSelector.VERSION_1 if version == 1 else VersionSelector.VERSION_2
        conn = await client.connect(ClientSettings(channel_value=200_000, fee_rate=1000, versions=selector), b"S" * 32)
        await conn.pay(4000)
        settlement = await conn.settle()
        assert isinstance(settlement, bytes)
        tx = await _confirmed(client, settlement)
        payout = tx.vout[-1].nValue
        status, body = await api_get(server.data_dir, "/v1/wallet/balance")
        assert status == 200 and json.loads(body)["confirmed"] == payout, body  # the server follows its coins
        # The daily limit is 0 (the default): the signer sends nothing away.
        status, body = await api_get(server.data_dir, "/v1/wallet/send",
                                     {"address": await client.wallet.new_address(), "amount": 1000})
        assert status == 409, body
        assert "the signer refused: spending 1" in json.loads(body)["error"], body
        assert "would pass the daily limit of 0 sat" in json.loads(body)["error"], body
    finally:
        await client.close()
        await server.stop()
        await signer.stop()
    [record] = await server_channels(server.data_dir)
    assert record.version == version and record.best_value == 1000 + 4000 and record.settlement_tx == settlement
    channel = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
    assert verify_input(settlement, 0, channel.script_pubkey, record.value)
    assert tx.vout[-1].nValue > 5000 - 1000  # the server's payout: b less a fee
    log = signer.log.read_text()
    assert "signed settlement" in log and f"server {tx.vout[-1].nValue} sat (best payment 5000)" in log
    assert "refused a funding: spending" in log
    if version == 1:
        assert "signed v1 refund of channel" in log
    assert "Traceback" not in log and "Traceback" not in server.log.read_text()
    # Settling offline needs keys the directory does not have: one line, and no wallet made there.
    done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "settle", "--data-dir", str(server.data_dir),
                           "--all"], cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "to sign with: a server whose keys are elsewhere" in done.stderr, done.stderr
    assert not list(server.data_dir.glob("wallet.sqlite*"))
    _no_secret_in(server.data_dir, signer.secrets())


@pytest_twisted.ensureDeferred
async def test_the_signer_stopped_and_started_again_mid_run(tmp_path: Path) -> None:
    signer = SignerProcess(tmp_path / "signer")
    await signer.start()
    server = ServerProcess(tmp_path / "server", "--wallet", signer.wallet_option)
    client = RemoteClient(tmp_path, server)
    try:
        await server.start()
        await client.open()
        conn = await client.connect(ClientSettings(channel_value=200_000, fee_rate=1000), b"S" * 32)
        await conn.pay(1000)
        status, body = await api_get(server.data_dir, "/v1/health")
        assert status == 200 and json.loads(body)["checks"]["signer"] == "ok"

        await signer.stop()
        await conn.pay(2000)  # a payment needs no signature of the server's
        with pytest.raises(Exception, match="the server cannot make a channel key now"):
            await client.connect(ClientSettings(channel_value=200_000, fee_rate=1000), b"N" * 32)
        status, body = await api_get(server.data_dir, "/v1/health")
        report = json.loads(body)
        assert status == 503 and report["checks"]["signer"] == "failed", report
        assert any(r.startswith("signer: ") for r in report["reasons"]), report
        status, body = await api_get(server.data_dir, "/metrics")
        assert b"paychan_signer_up 0.0" in body and b"paychan_signer_failures_total 1.0" in body, body

        settling = conn.settle()  # waits for the signer
        for _ in range(400):
            if "the settlement waits for the signer" in server.log.read_text():
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert "the settlement waits for the signer" in server.log.read_text()
        await signer.start()
        settlement = await settling
        assert isinstance(settlement, bytes)
        await _confirmed(client, settlement)
        status, body = await api_get(server.data_dir, "/metrics")
        assert b"paychan_signer_up 1.0" in body
    finally:
        await client.close()
        await server.stop()
        await signer.stop()
    records = await server_channels(server.data_dir)
    [record] = [r for r in records if r.settlement_tx is not None]
    assert record.best_value == 1000 + 1000 + 2000 and record.settlement_tx == settlement
    assert "Traceback" not in server.log.read_text()
