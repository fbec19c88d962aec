"""``twistd paychan --wallet`` under a real twistd (issue 18): the default ``sqlite`` creates and
names its file as it always did, ``memory`` warns and leaves no wallet on disk, and a third
party's backend found on PYTHONPATH holds the keys of a channel that opens, is paid and settles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest_twisted
from bitcoin.core import CTransaction

from procs import REPO, RemoteClient, ServerProcess, server_channels
from twisted_paychan.bitcoin.addresses import hash160
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.settings import ClientSettings

KEYLOG_PLUGIN = REPO / "tests" / "wallet" / "keylog_plugin"


@pytest_twisted.ensureDeferred
async def test_the_default_sqlite_wallet_is_created_once_and_named(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    for start in range(2):
        await server.start()
        await server.stop()
        log = server.log.read_text()
        assert log.count("created the wallet") == 1, log  # the first start only
    assert f"created the wallet {server.data_dir / 'wallet.sqlite'}; write down its recovery words" in log
    assert (server.data_dir / "wallet.sqlite").exists()


@pytest_twisted.ensureDeferred
async def test_memory_warns_and_writes_no_wallet(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", "--wallet", "memory")
    await server.start()
    await server.stop()
    log = server.log.read_text()
    assert "the wallet is in memory (--wallet memory): its keys die with this process" in log, log
    assert "Traceback" not in log
    assert not list(server.data_dir.glob("wallet.sqlite*"))


def test_memory_refuses_a_passphrase_file_in_one_line(tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    passphrase.chmod(0o600)
    done = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon",
                           "--pidfile=", "--logfile=-", "paychan", "--data-dir", str(tmp_path / "d"),
                           "--api-listen", "none", "--rpc-listen", "none", "--listen", "tcp:0:interface=127.0.0.1",
                           "--wallet", "memory", "--wallet-passphrase-file", str(passphrase)],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "paychan: not starting: the memory wallet has no file to encrypt: drop --wallet-passphrase-file" in output
    assert "Traceback" not in output


@pytest_twisted.ensureDeferred
async def test_a_third_partys_backend_holds_the_keys_of_a_channel(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    server = ServerProcess(tmp_path / "server", "--wallet", f"keylog:{keylog}",
                           env={"PYTHONPATH": f"{REPO}{os.pathsep}{KEYLOG_PLUGIN}"})
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open()
        conn = await client.connect(ClientSettings(channel_value=200_000, fee_rate=1000), b"K" * 32)
        await conn.pay(4000)
        settlement = await conn.settle()
        await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
        tx = CTransaction.deserialize(settlement)
        assert (await client.chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
    finally:
        await client.close()
        await server.stop()
    keys = [line.split() for line in keylog.read_text().splitlines()]
    [record] = await server_channels(server.data_dir)
    assert ["channel", record.server_key.hex()] in keys  # K_S of the contract came from the plugin
    payouts = {b"\x00\x14" + hash160(bytes.fromhex(key)) for purpose, key in keys if purpose == "payout"}
    assert bytes(tx.vout[1].scriptPubKey) in payouts  # the server's income pays one of the plugin's keys
    assert record.best_value == 1000 + 4000 and record.settlement_tx == settlement
    assert not list(server.data_dir.glob("wallet.sqlite*"))
