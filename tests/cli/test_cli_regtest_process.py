"""``paychan regtest`` as a real process on a free port: funded and queried over RPC by the
in-process CLI, then stopped by SIGTERM, SIGINT or the ``stop`` RPC, cleanly (exit 0, cookie
removed, data directory released with its blocks)."""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.task import Clock

from cli_helpers import ok
from twisted_paychan.chain.embedded.node import RegtestNode

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60


class NodeProcess:
    def __init__(self, data_dir: Path, log: Path, *extra: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(data_dir),
             "--rpc-listen", "tcp:0:interface=127.0.0.1", "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env=env,
            cwd=str(REPO),
        )
        self.info = self._ready_line()

    def _ready_line(self) -> Any:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=STARTUP_TIMEOUT):
                self.process.kill()
                raise AssertionError(f"paychan regtest did not start: {self.log.read_text()}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"paychan regtest exited: {self.log.read_text()}")
        return json.loads(line)

    def wait(self) -> int:
        return self.process.wait(timeout=STARTUP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def started(node_dir: Path, tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(node_dir, tmp_path / "node.log")
    try:
        yield node
    finally:
        node.kill()


def test_fund_and_query_a_running_node_then_sigterm(started: NodeProcess, node_dir: Path, tmp_path: Path) -> None:
    info = started.info
    assert info["event"] == "listening" and info["host"] == "127.0.0.1" and info["port"] > 0
    assert info["url"] == f"http://127.0.0.1:{info['port']}"
    cookie = node_dir / "chain" / ".cookie"
    assert info["cookie"] == str(cookie) and cookie.exists()
    rpc = ("--chain", info["url"], "--rpc-cookie", str(cookie))
    wallet_dir = str(tmp_path / "wallet")

    address = ok("wallet", "--data-dir", wallet_dir, *rpc, "--create", "new-address").stdout.strip()
    funded = ok("regtest-fund", *rpc, "--json", address, "123456").json
    assert funded["height"] == 101
    balance = ok("wallet", "--data-dir", wallet_dir, *rpc, "--json", "balance").json
    assert (balance["confirmed"], balance["unconfirmed"]) == (123456, 0)
    [coin] = ok("wallet", "--data-dir", wallet_dir, *rpc, "--json", "coins").json
    assert f"{coin['txid']}:{coin['vout']}" == funded["outpoint"]

    started.process.send_signal(signal.SIGTERM)
    assert started.wait() == 0
    assert not cookie.exists()
    log = started.log.read_text()
    assert "Traceback" not in log and "closed" in log
    reopened = RegtestNode(node_dir / "chain", Clock())  # lock released, blocks kept
    try:
        assert reopened.height == 101
    finally:
        reopened.close()


def test_sigint_stops_it_cleanly(started: NodeProcess, node_dir: Path) -> None:
    # The cookie is found in the data directory without --rpc-cookie.
    ok("regtest-mine", "--chain", started.info["url"], "--data-dir", str(node_dir), "2")
    started.process.send_signal(signal.SIGINT)
    assert started.wait() == 0
    assert not (node_dir / "chain" / ".cookie").exists()


def test_user_password_and_the_stop_rpc(node_dir: Path, tmp_path: Path) -> None:
    node = NodeProcess(node_dir, tmp_path / "node.log", "--rpc-user", "alice", "--rpc-password", "hunter2")
    try:
        assert node.info["cookie"] is None and not (node_dir / "chain" / ".cookie").exists()
        port = node.info["port"]
        mined = ok("regtest-mine", "--chain", f"http://alice:hunter2@127.0.0.1:{port}", "--json", "1").json
        assert mined["height"] == 1
        request = urllib.request.Request(
            node.info["url"],
            data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "stop"}).encode(),
            headers={"Authorization": "Basic " + base64.b64encode(b"alice:hunter2").decode()},
        )
        with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT) as response:
            assert json.loads(response.read())["result"] == "paychan regtest node stopping"
        assert node.wait() == 0
    finally:
        node.kill()


def test_a_second_node_on_the_same_data_dir_is_refused(started: NodeProcess, node_dir: Path, tmp_path: Path) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(node_dir), "--rpc-listen", "tcp:0:interface=127.0.0.1"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=STARTUP_TIMEOUT,
    )
    assert second.returncode == 1
    assert "is in use by process" in second.stderr and "Traceback" not in second.stderr
