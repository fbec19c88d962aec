"""``paychan watch`` runs the client's refund watcher over a data directory until stopped."""

import os
import signal
import subprocess
import sys

import pytest_twisted
from twisted.internet import threads

from procs import REPO, ServerProcess


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "twisted_paychan.cli", *argv]


@pytest_twisted.ensureDeferred
async def test_watch_starts_and_stops_cleanly(tmp_path):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client_dir = str(tmp_path / "client")
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        def scenario() -> tuple[int, str]:
            run = lambda *a: subprocess.run(cli(*a), cwd=str(REPO), env=env, capture_output=True, text=True,  # noqa: E731
                                            timeout=120, check=True).stdout
            address = run("wallet", "--data-dir", client_dir, *chain, "--create", "new-address").strip()
            run("regtest-fund", *chain, address, "3000000")
            run("pay", "--server", server.endpoint, *chain, "--data-dir", client_dir,
                "--value", "1000000", "--amount", "1000", "--count", "3")
            watch = subprocess.Popen(cli("watch", "--data-dir", client_dir, *chain), cwd=str(REPO), env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert watch.stderr is not None
            assert "watching the channels" in watch.stderr.readline()
            waiting = watch.stderr.readline()  # the channel pay kept open: which, and until when
            assert waiting.startswith("channel ") and "open; waiting for its settlement, or until " in waiting
            assert "UTC (expiry + 300 s) to broadcast its refund" in waiting
            watch.send_signal(signal.SIGTERM)
            out, _ = watch.communicate(timeout=30)
            return watch.returncode, out

        code, out = await threads.deferToThread(scenario)
        assert code == 0 and "stopped" in out
    finally:
        await server.stop()
