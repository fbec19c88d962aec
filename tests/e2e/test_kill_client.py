"""SIGKILL the client (``paychan pay``) in the middle of a stream of payments, then run it
again: it resumes the stored channel, and after it settles, the server was paid exactly what the
client's store says it paid, and the client got the rest back in the settlement (mined)."""

import json
import os
import signal
import subprocess
import sys

import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import threads

from procs import REPO, ServerProcess, server_channels

VALUE = 2_000_000


def paychan(*argv: str) -> list[str]:
    return [sys.executable, "-m", "twisted_paychan.cli", *argv]


async def run(*argv: str) -> str:
    def call() -> str:
        done = subprocess.run(paychan(*argv), cwd=str(REPO), capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        return done.stdout

    return await threads.deferToThread(call)


@pytest_twisted.ensureDeferred
async def test_client_killed_mid_stream_resumes_and_loses_nothing(tmp_path):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client_dir = str(tmp_path / "client")
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    try:
        address = (await run("wallet", "--data-dir", client_dir, *chain, "--create", "new-address")).strip()
        await run("regtest-fund", *chain, address, "5000000")
        pay = ["pay", "--server", server.endpoint, *chain, "--data-dir", client_dir,
               "--value", str(VALUE), "--amount", "1000"]

        def pay_and_kill() -> None:
            child = subprocess.Popen(paychan(*pay, "--count", "1500"), cwd=str(REPO), text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
            assert child.stderr is not None
            for line in child.stderr:
                if "payment 300/1500" in line:  # progress: well into the stream
                    child.send_signal(signal.SIGKILL)
                    break
            child.wait()

        await threads.deferToThread(pay_and_kill)
        result = json.loads(await run(*pay, "--count", "10", "--settle", "--json"))
        assert result["resumed"] is True
        await run("regtest-mine", *chain, "1")
        await server.stop()

        (record,) = await server_channels(server.data_dir)
        assert record.best_value == result["channel_paid"]
        settlement = CTransaction.deserialize(record.settlement_tx)
        assert settlement.vout[0].nValue == VALUE - result["channel_paid"]  # the client's change, in full
        assert result["channel_paid"] >= 300 * 1000 + 10 * 1000
    finally:
        await server.stop()
