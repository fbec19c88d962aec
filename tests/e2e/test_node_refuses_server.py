"""Processes end to end: a standalone node (``paychan regtest``), a ``twistd paychan`` whose
credentials that node refuses (HTTP 401) once it restarted with a new cookie (the server reads a
stale copy of the old one; a server refused at start does not start at all: cli.md), and
``paychan pay`` opening a channel. The client is
told the server's node is unavailable, its coins come back at once (its own node does not know
the contract), and ``paychan channels`` shows the channel as failed with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task, threads

from procs import REPO, _listening, free_port

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest_twisted.ensureDeferred
async def test_a_server_whose_node_refuses_it_costs_the_client_nothing(tmp_path: Path) -> None:
    node_port, server_port = free_port(), free_port()
    node_argv = [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(tmp_path / "node"),
                 "--rpc-listen", f"tcp:{node_port}:interface=127.0.0.1", "--json", "--no-log"]
    node = subprocess.Popen(node_argv, cwd=str(REPO), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    server = None
    try:
        assert node.stdout is not None
        listening = json.loads(await threads.deferToThread(node.stdout.readline))
        url, cookie = listening["url"], listening["cookie"]
        stale = tmp_path / "cookie-copy"
        shutil.copyfile(cookie, stale)
        stale.chmod(0o600)
        server = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
             f"--logfile={tmp_path / 'server.log'}", "paychan", "--data-dir", str(tmp_path / "server"),
             "--listen", f"tcp:{server_port}:interface=127.0.0.1", "--chain", url, "--rpc-cookie", str(stale),
             "--api-listen", "none", "--fee-rate", "1000"],
            cwd=str(REPO), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _listening(server_port):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            await task.deferLater(reactor, 0.05, lambda: None)
        # The node restarts and writes a new cookie; the server's copy is the old one.
        node.terminate()
        await threads.deferToThread(node.wait, 30)
        node = subprocess.Popen(node_argv, cwd=str(REPO), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert node.stdout is not None
        listening = json.loads(await threads.deferToThread(node.stdout.readline))
        url, cookie = listening["url"], listening["cookie"]
        assert Path(cookie).read_text() != stale.read_text()

        def scenario() -> tuple[subprocess.CompletedProcess[str], dict, int, int]:
            chain = ["--chain", url, "--rpc-cookie", cookie]
            client = str(tmp_path / "client")
            address = cli("wallet", "--data-dir", client, *chain, "--create", "new-address").stdout.strip()
            assert cli("regtest-fund", *chain, address, "3000000").returncode == 0
            before = json.loads(cli("wallet", "--data-dir", client, *chain, "balance", "--json").stdout)
            pay = cli("pay", "--server", f"tcp:127.0.0.1:{server_port}", *chain, "--data-dir", client,
                      "--value", "1000000", "--amount", "1000", "--count", "1")
            channels = json.loads(cli("channels", "--data-dir", client, "--json").stdout)
            after = json.loads(cli("wallet", "--data-dir", client, *chain, "balance", "--json").stdout)
            return pay, channels, before["total"], after["total"]

        pay, channels, before, after = await threads.deferToThread(scenario)
        assert pay.returncode == 1
        assert "the server's node is unavailable" in pay.stderr
        assert "the contract never reached the chain: coins reclaimed by " in pay.stderr
        assert "Traceback" not in pay.stderr
        [row] = channels["channels"]
        assert row["state"] == "failed" and row["closing_txid"] in pay.stderr
        assert row["note"].startswith("opening failed: ")
        assert 0 < before - after < 2_000  # the reclaim's fee only
        log = (tmp_path / "server.log").read_text()
        assert "auth-refused" in log and "contract stays pending" in log
    finally:
        for proc in (server, node):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
