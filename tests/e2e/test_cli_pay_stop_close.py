"""``paychan pay`` and ``paychan close`` as a user runs them (real processes, one server):
the checks made before money is locked, SIGINT and SIGTERM between two payments (exit 130 and
143, the channel kept and resumed with nothing lost), ``close`` settling and never opening a
channel (twice, and ``pay --settle --count 0``), a settlement made while the client was away
said and recorded, and a server that is gone explained (refund time, ``paychan watch``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest_twisted
from twisted.internet import threads

from procs import REPO, ServerProcess, free_port

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "twisted_paychan.cli", *argv]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*argv), cwd=str(REPO), env=ENV, capture_output=True, text=True, timeout=180)


def ok(*argv: str) -> subprocess.CompletedProcess[str]:
    done = run(*argv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done


def refused(message: str, *argv: str) -> subprocess.CompletedProcess[str]:
    done = run(*argv)
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    return done


def interrupted(signum: int, *argv: str) -> tuple[int, str, str]:
    """Run ``paychan`` in a session of its own (so that SIGINT reaches it as Ctrl-C would, not
    ignored as in a background job), send ``signum`` once the channel is open, and return the
    exit status, stdout and stderr."""
    child = subprocess.Popen(cli(*argv), cwd=str(REPO), env=ENV, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    assert child.stderr is not None and child.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in child.stderr:
        seen.append(line)
        if line.startswith(("channel opened:", "channel resumed:")):
            child.send_signal(signum)
            break
        assert time.monotonic() < deadline, seen
    out, err = child.communicate(timeout=120)
    return child.returncode, out, "".join(seen) + err


def client_channels(client_dir: str) -> list[dict[str, Any]]:
    return [c for c in json.loads(ok("channels", "--data-dir", client_dir, "--json").stdout)["channels"]
            if c["side"] == "client"]


@pytest_twisted.ensureDeferred
async def test_pay_checks_stops_and_closes(tmp_path):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client_dir = str(tmp_path / "client")
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    pay = ["pay", "--server", server.endpoint, *chain, "--data-dir", client_dir]
    close = ["close", "--server", server.endpoint, *chain, "--data-dir", client_dir]

    def before_funding() -> None:
        refused(f"there is no data directory {client_dir}: check the path, or give --create",
                "wallet", "--data-dir", client_dir, *chain, "balance")
        assert not os.path.exists(client_dir)
        ok("wallet", "--data-dir", client_dir, *chain, "--create", "new-address")
        empty = refused("insufficient funds: need 1,000,000 sat plus the contract fee, have 0 sat",
                        *pay, "--value", "1000000", "--amount", "1000")
        assert "SERVER_REQUESTED" not in empty.stderr
        refused("--amount 2000 is more than --value 1000", *pay, "--value", "1000", "--amount", "2000")
        refused("are more than a channel of --value 100000 can pay", *pay, "--value", "100000", "--amount",
                "1000", "--count", "101")

    def funded() -> None:
        address = ok("wallet", "--data-dir", client_dir, *chain, "new-address").stdout.strip()
        ok("regtest-fund", *chain, address, "5000000")
        refused("its minimum channel value is above --value (server wants at least 100000, we lock 10000)",
                *pay, "--value", "10000", "--amount", "1000")
        nowhere = f"tcp:127.0.0.1:{free_port()}"
        refused(f"cannot reach {nowhere}: ", "pay", "--server", nowhere, *chain, "--data-dir", client_dir,
                "--value", "1000000", "--amount", "1000")
        nothing = ok(*pay, "--value", "1000000", "--amount", "1000", "--count", "0", "--settle")
        assert "nothing to close" in nothing.stdout
        assert client_channels(client_dir) == []

    await threads.deferToThread(before_funding)
    try:
        await threads.deferToThread(funded)

        def stop_with_signals() -> None:
            status, out, err = interrupted(signal.SIGINT, *pay, "--value", "1000000", "--amount", "1",
                                           "--count", "900000")
            assert status == 130, out + err
            assert "channel opened: 1,000,000 sat locked, 1,000 sat initial payment required by the server" in err
            assert "Traceback" not in err
            [line] = out.splitlines()
            assert line.startswith("stopped by SIGINT after ") and "the next paychan pay resumes it" in line
            first = int(line.split(" after ")[1].split(" of ")[0])
            status, out, err = interrupted(signal.SIGTERM, *pay, "--json", "--value", "1000000", "--amount", "1",
                                           "--count", "900000")
            assert status == 143, out + err
            result = json.loads(out)
            assert result["interrupted"] == "SIGTERM" and result["resumable"] is True
            assert result["channel_paid"] == 1000 + first + result["payments"]  # nothing lost, nothing extra
            assert result["payments"] < 900000
            # Several --server (fail-over): Ctrl-C stops the same way, and the same channel is resumed.
            both = f"{server.endpoint},{server.endpoint}"
            status, out, err = interrupted(signal.SIGINT, "pay", "--server", both, *chain, "--data-dir", client_dir,
                                           "--json", "--value", "1000000", "--amount", "1", "--count", "900000")
            assert status == 130, out + err
            again = json.loads(out)
            assert again["interrupted"] == "SIGINT" and again["contract_txid"] == result["contract_txid"]
            assert again["channel_paid"] == result["channel_paid"] + again["payments"]
            [stored] = client_channels(client_dir)
            assert stored["state"] == "open" and stored["paid"] == again["channel_paid"]

        await threads.deferToThread(stop_with_signals)

        def close_twice() -> None:
            closed = ok(*close)
            assert " settled by " in closed.stdout and "back to the wallet" in closed.stdout
            again = ok(*close)
            assert again.stdout.startswith("nothing to close: no open channel to")
            [stored] = client_channels(client_dir)  # no new channel was opened
            assert stored["state"] in ("settling", "settled") and stored["closing_txid"]

        await threads.deferToThread(close_twice)

        def settled_while_away() -> None:
            opened = json.loads(ok(*pay, "--json", "--value", "200000", "--amount", "1000").stdout)
            ok("settle", "--data-dir", str(server.data_dir), opened["contract_txid"])
            again = ok(*pay, "--value", "200000", "--amount", "1000")
            first_line = again.stderr.splitlines()[0]
            assert first_line.startswith(f"channel {opened['contract_txid']} was settled by the server while this "
                                         "client was away"), again.stderr
            assert "channel opened: 200,000 sat locked" in again.stderr
            states = {c["contract_txid"]: c["state"] for c in client_channels(client_dir)}
            assert states[opened["contract_txid"]] in ("settling", "settled")

        await threads.deferToThread(settled_while_away)

        def server_gone() -> None:
            # The channels were opened with the server's endpoint as its id; nothing listens here.
            gone = run("close", "--server", f"tcp:127.0.0.1:{free_port()}", "--server-id", server.endpoint, *chain,
                       "--data-dir", client_dir)
            assert gone.returncode == 1, gone.stdout + gone.stderr
            assert "cannot be reached" in gone.stdout and "becomes valid at" in gone.stdout
            assert "paychan watch --data-dir" in gone.stdout and "Traceback" not in gone.stderr
            dead = [f"tcp:127.0.0.1:{free_port()}" for _ in range(2)]
            both = run("close", "--server", ",".join(dead), "--server-id", server.endpoint, *chain,
                       "--data-dir", client_dir)
            assert both.returncode == 1 and "no server can be reached: " in both.stdout, both.stdout + both.stderr
            assert all(f"{d} (" in both.stdout for d in dead) and "becomes valid at" in both.stdout

        await threads.deferToThread(server_gone)

        def second_server_answers() -> None:
            # Servers that share one database: the first does not answer, the channel is settled
            # through the second.
            dead = f"tcp:127.0.0.1:{free_port()}"
            closed = ok("close", "--server", dead, "--server", server.endpoint, "--server-id", server.endpoint,
                        *chain, "--data-dir", client_dir)
            assert " settled by " in closed.stdout, closed.stdout + closed.stderr

        await threads.deferToThread(second_server_answers)
    finally:
        await server.stop()
