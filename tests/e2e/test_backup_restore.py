"""``paychan backup`` beside a running server, and a restore from it: the server is lost
(SIGKILL), a fresh data directory gets the backup's two files, a new server on it settles every
channel, and each settlement pays the client exactly the change of the client's last payment
(so the payments still in the payment log at backup time were in the copy), passes Bitcoin
Core's script interpreter and is mined.

The chain is a separate ``paychan regtest`` node (the embedded node in its own process), as the
network would be: it outlives the server that is lost."""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import threads

from procs import REPO, RemoteClient, ServerProcess
from twisted_paychan.bitcoin import consensus
from twisted_paychan.chain.types import TxState, display_hex
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


class Node:
    """``paychan regtest`` on a free port, until killed."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(data_dir),
             "--rpc-listen", "tcp:0:interface=127.0.0.1", "--json"],
            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=60), log.read_text()
        line = self.proc.stdout.readline()
        assert line, log.read_text()
        info = json.loads(line)
        self.url: str = info["url"]
        self.cookie = Path(info["cookie"])
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ChainedServer(ServerProcess):
    """``twistd paychan`` on the node's chain (``--chain URL``) rather than its own."""

    def __init__(self, data_dir: Path, node: Node) -> None:
        super().__init__(data_dir, "--chain", node.url, "--rpc-cookie", str(node.cookie))
        self.rpc_port = node.port  # what start() waits for; this server serves no RPC itself
        self.node = node

    @property
    def cookie(self) -> Path:
        return self.node.cookie


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node", tmp_path / "node.log")
    try:
        yield n
    finally:
        n.kill()


async def paychan(*argv: str) -> Any:
    def call() -> Any:
        done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv, "--json"], cwd=str(REPO),
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout)

    return await threads.deferToThread(call)


@pytest_twisted.ensureDeferred
async def test_backup_of_a_running_server_restores_and_settles_every_channel(tmp_path: Path, node: Node) -> None:
    lost = ChainedServer(tmp_path / "lost", node)
    await lost.start()
    client = RemoteClient(tmp_path, lost)
    try:
        await client.open(fund_blocks=3)
        settings = ClientSettings(channel_value=500_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        channels = [await client.connect(settings, hashlib.sha256(b"payer %d" % i).digest()) for i in range(3)]
        # After the last open (a SQLite write), payments go to the payment log only.
        for i, channel in enumerate(channels):
            for _ in range(i + 2):
                await channel.pay(7_000 + 1_000 * i)
        channels[2].disconnect()

        answer = await paychan("backup", "--data-dir", str(lost.data_dir), str(tmp_path / "backup"))
        assert answer["through_api"] is True  # the running server made it (POST /v1/backup)
        assert answer["online"] is True
        assert answer["server_channels"] == 3 and answer["wallet_keys"] >= 3
        assert answer["logged_payments"] >= 3
        for name in ("channels.sqlite", "wallet.sqlite", "backup.json"):
            assert stat.S_IMODE((tmp_path / "backup" / name).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "backup").stat().st_mode) == 0o700
        # A second backup into the same directory is refused rather than mixed with the first.
        refused = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "backup", "--data-dir",
                                  str(lost.data_dir), str(tmp_path / "backup")], cwd=str(REPO), capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert refused.returncode == 1 and "already holds a backup" in refused.stderr
        assert "Traceback" not in refused.stderr

        lost.kill()  # the machine is gone: no clean shutdown, no checkpoint
        for channel in channels[:2]:
            channel.disconnect()
        # With no server answering (its api.json is stale), the command copies the files itself.
        offline = await paychan("backup", "--data-dir", str(lost.data_dir), str(tmp_path / "offline"))
        assert offline["through_api"] is False and offline["online"] is False
        assert offline["server_channels"] == 3

        # Restore as doc/operating.md says: a new private data directory with the two files.
        fresh = tmp_path / "restored"
        fresh.mkdir(mode=0o700)
        for name in ("channels.sqlite", "wallet.sqlite"):
            shutil.copy2(tmp_path / "backup" / name, fresh / name)
        restored = ChainedServer(fresh, node)
        await restored.start()
        try:
            answer = await paychan("settle", "--data-dir", str(fresh), "--all")
            results = {r["contract_txid"]: r for r in answer["results"]}
            assert set(results) == {display_hex(c.contract_txid) for c in channels}
            burn = await client.wallet.new_address()
            await client.chain.connection.call("generatetoaddress", 1, burn)
            for channel in channels:
                record = await client.store.client_channel(channel.contract_txid)
                settlement_txid = bytes.fromhex(results[display_hex(channel.contract_txid)]["settlement_txid"])[::-1]
                raw = await client.chain.get_transaction(settlement_txid)
                assert raw is not None
                status = await client.chain.tx_status(settlement_txid)
                assert status.state is TxState.CONFIRMED and status.confirmations >= 1
                contract = CTransaction.deserialize(record.contract)
                assert consensus.verify_input(raw, 0, bytes(contract.vout[0].scriptPubKey), contract.vout[0].nValue)
                # Output 0 is the client's change after its last payment: nothing paid was lost.
                assert CTransaction.deserialize(raw).vout[0].nValue == record.client_change
                assert record.value - record.client_change > 7_000
        finally:
            await restored.stop()
    finally:
        await client.close()
        await lost.stop()
