"""``twistd paychan`` as an operator meets it (real processes): each ordinary mistake at start
stops it with one line and no traceback, before it listens (a busy ``--listen`` or
``--rpc-listen``, a data directory another server holds, a node it cannot reach, a fee rate
under its floor); and the log of a session is readable: no kernel or per-payment lines without
``--verbose``, a failed handshake with its cause, times in ISO-8601 beside the Unix value, one
"settled" line per settlement however often it is asked for, and no critical line on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads

from procs import REPO, ServerProcess, free_port

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def twistd(data_dir: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
            "--logfile=-", "paychan", "--data-dir", str(data_dir), "--api-listen", "none", *extra]
    return subprocess.run(argv, cwd=str(REPO), env=ENV, capture_output=True, text=True, timeout=timeout)


def refused_with(done: subprocess.CompletedProcess[str], message: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert message in output, output
    assert "Traceback" not in output and "Unhandled error" not in output, output
    assert output.count("paychan: not starting:") <= 1, output


def loopback(port: int) -> list[str]:
    return [f"tcp:{port}:interface=127.0.0.1"]


def test_a_busy_listen_port_stops_the_server(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = twistd(tmp_path / "d", "--listen", *loopback(port), "--rpc-listen", "none")
    refused_with(done, f"paychan: not starting: cannot listen on --listen tcp:{port}:interface=127.0.0.1: ")
    assert "Address already in use" in done.stdout + done.stderr


def test_a_busy_rpc_port_stops_the_server(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = twistd(tmp_path / "d", "--listen", *loopback(free_port()), "--rpc-listen", *loopback(port))
    refused_with(done, f"paychan: not starting: cannot serve JSON-RPC on --rpc-listen tcp:{port}:interface=127.0.0.1")


def test_an_unreachable_chain_stops_the_server_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    done = twistd(tmp_path / "d", "--listen", *loopback(free_port()), "--chain", f"http://127.0.0.1:{free_port()}")
    refused_with(done, "paychan: not starting: cannot reach the node at http://127.0.0.1:")
    assert "Connection refused" in done.stdout + done.stderr
    assert time.monotonic() - started < 30


def test_a_fee_rate_under_the_floor_is_refused(tmp_path: Path) -> None:
    done = twistd(tmp_path / "d", "--fee-rate", "500")
    assert done.returncode != 0
    assert "--fee-rate must be at least 1000 sat/kB" in done.stdout + done.stderr
    assert not (tmp_path / "d").exists()


def test_the_chain_names_the_wallet_network() -> None:
    from twisted_paychan.bitcoin.addresses import MAINNET, REGTEST, TESTNET
    from twisted_paychan.startup import NETWORK_OF_CHAIN

    assert NETWORK_OF_CHAIN["main"] is MAINNET and NETWORK_OF_CHAIN["regtest"] is REGTEST
    assert NETWORK_OF_CHAIN["test"] is TESTNET and NETWORK_OF_CHAIN["signet"] is TESTNET


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), env=ENV,
                          capture_output=True, text=True, timeout=180)
    return done


@pytest_twisted.ensureDeferred
async def test_a_session_logs_what_an_operator_needs_and_nothing_more(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    await server.start()
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    client = str(tmp_path / "client")

    def session() -> str:
        # A second server on the same data directory says so, in one line.
        second = twistd(server.data_dir, "--listen", *loopback(free_port()), "--rpc-listen", "none")
        refused_with(second, "is in use by another paychan process")
        # The probe reads the chain's name from a real node: regtest here.
        from twisted_paychan.bitcoin.addresses import REGTEST
        from twisted_paychan.startup import probe_chain

        assert probe_chain(server.rpc_url, str(server.cookie)).network is REGTEST
        # A server started on that node over RPC follows it: a regtest wallet.
        remote_dir = tmp_path / "remote"
        remote = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
             f"--logfile={tmp_path / 'remote.log'}", "paychan", "--data-dir", str(remote_dir), "--api-listen", "none", "--listen",
             *loopback(free_port()), *chain], cwd=str(REPO), env=ENV)
        deadline = time.monotonic() + 60
        while "paychan server: data in" not in _read(tmp_path / "remote.log"):
            assert remote.poll() is None and time.monotonic() < deadline, _read(tmp_path / "remote.log")
            time.sleep(0.1)
        remote.send_signal(signal.SIGTERM)
        remote.wait(timeout=60)
        remote_log = _read(tmp_path / "remote.log")
        assert "(regtest)" in remote_log and "#critical" not in remote_log and "Traceback" not in remote_log
        assert "Starting factory" not in remote_log  # one per RPC connection, before

        address = cli("wallet", "--data-dir", client, *chain, "--create", "new-address").stdout.strip()
        assert cli("regtest-fund", *chain, address, "3000000").returncode == 0
        small = cli("pay", "--server", server.endpoint, *chain, "--data-dir", client, "--value", "50000",
                    "--amount", "1000")
        assert small.returncode == 1
        paid = cli("pay", "--server", server.endpoint, *chain, "--data-dir", client, "--value", "200000",
                   "--amount", "1000", "--count", "5", "--json")
        assert paid.returncode == 0, paid.stderr
        txid = json.loads(paid.stdout)["contract_txid"]
        unknown = cli("settle", "--data-dir", str(server.data_dir), "00" * 32)
        assert unknown.returncode == 1 and f"the server stores no channel {'00' * 32}" in unknown.stderr
        assert unknown.stdout == "" and "Traceback" not in unknown.stderr
        theirs = cli("settle", "--data-dir", client, txid)
        assert theirs.returncode == 1 and "is a client channel (this data directory paid it)" in theirs.stderr
        assert "paychan close --server" in theirs.stderr and not (Path(client) / "chain").exists()
        for _ in range(3):  # the operator asks three times: one settlement
            assert cli("settle", "--data-dir", str(server.data_dir), txid).returncode == 0
        assert cli("regtest-mine", *chain, "1").returncode == 0
        deadline = time.monotonic() + 30
        while not re.search(rf"{txid} \(peer [^)]*\): settled on chain", _read(server.log)):
            assert time.monotonic() < deadline, _read(server.log)
            time.sleep(0.1)
        return txid

    try:
        txid = await threads.deferToThread(session)
    finally:
        await server.stop()
    log = _read(server.log)
    assert "kernel:" not in log and "#debug" not in log  # not without --verbose
    assert "payment +" not in log
    # The client refused the server's minimum: the server says why the handshake failed.
    assert re.search(r"connection closed \(REMOTE_SENT_ERROR: [A-Z_]+: .+\)", log), log
    assert re.search(rf"channel {txid} \(peer [^)]*\): stored, value 200000 sat, expires 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+\)",
                     log), log
    assert len(re.findall(rf"{txid} \(peer [^)]*\): settled", log)) == 1, log
    assert len(re.findall(rf"{txid} \(peer [^)]*\): settlement broadcast", log)) == 1, log
    shutdown = log[log.index("Received SIGTERM"):]
    assert "#critical" not in shutdown and "Traceback" not in shutdown and "Server Shut Down." in shutdown


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("argv, message", [
    (("pay", "--server", "localhost:4242"), "--server needs the endpoint type first: tcp:localhost:4242"),
    (("pay", "--server", "tcp:127.0.0.1"), "has no port: write tcp:HOST:PORT"),
    (("pay", "--server", "http://127.0.0.1:4242"), "--server takes an endpoint, not a URL"),
    (("pay", "--server", "tcp:127.0.0.1:4242,localhost:4243"), "--server needs the endpoint type first: tcp:localhost:4243"),
    (("pay", "--server", "tcp:127.0.0.1:4242", "--server", "tcp:127.0.0.1"), "has no port: write tcp:HOST:PORT"),
])
def test_a_malformed_server_endpoint_is_one_line(tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    done = cli(*argv, "--data-dir", str(tmp_path), "--chain", "http://127.0.0.1:1", "--value", "100000", "--amount", "10")
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_make_run_passes_args_on() -> None:
    # Under `make test` this is a nested make, which prints "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "-n", "run", "ARGS=--verbose --min-payment 2000"], cwd=str(REPO),
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert any("paychan --data-dir paychan-data --verbose --min-payment 2000" in line
               for line in done.stdout.splitlines()), done.stdout
