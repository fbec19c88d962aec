"""Issue 13's kill test: two ``twistd paychan`` processes (nodes A and B) on one PostgreSQL
database and one chain (a standalone ``paychan regtest`` node both reach over RPC); the real
``paychan pay`` given both endpoints pays through A with payments in flight (``--window``); A is
SIGKILLed mid-stream; the client resumes the same channel on B and goes on paying, then asks B
to settle. The settlement pays the server exactly what the client's records say it paid (every
acknowledged payment, and the ones in flight at the kill, which the client's stored c covers), on
both sides' records; Bitcoin Core's interpreter (``bitcoin.consensus``) accepts it, and it is mined.

Both nodes are given the same wallet words, as an operator does (A's wallet is made from them, B's
by ``paychan wallet restore --mnemonic-file``): the channel's server key is derived from the seed
at a path stored in the database, so B can settle a channel A opened."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import reactor, threads

from procs import REPO, _listening, free_port
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from postgres_server import running_server  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
VALUE = 2_000_000
AMOUNT = 500
COUNT = 1500
WINDOW = 16


@pytest.fixture(scope="module")
def postgres():
    yield from running_server()


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _node(tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    """``paychan regtest`` on a free port: the process, its RPC URL and cookie file."""
    node = subprocess.Popen([sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(tmp / "node"),
                             "--rpc-listen", f"tcp:{free_port()}:interface=127.0.0.1", "--json", "--no-log"],
                            cwd=str(REPO), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert node.stdout is not None
    listening = json.loads(node.stdout.readline())
    return node, listening["url"], listening["cookie"]


def _server(tmp: Path, name: str, port: int, url: str, cookie: str, store: str) -> subprocess.Popen[bytes]:
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
         f"--logfile={log}", "paychan", "--data-dir", str(tmp / name), "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--chain", url, "--rpc-cookie", cookie, "--store", store, "--api-listen", "none", "--fee-rate", "1000"],
        cwd=str(REPO), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _listening(port):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{name} did not start in 60 s"
        time.sleep(0.05)
    return proc


def _wallet_from_words(data_dir: Path, words: str) -> None:
    """The first node's wallet, made from known words (what ``twistd paychan`` makes at its first
    start, with words of its own that ``paychan wallet seed`` would show)."""
    from twisted_paychan.bitcoin.addresses import REGTEST
    from twisted_paychan.wallet.hd import Seed
    from twisted_paychan.wallet.sqlite import SqliteWallet

    data_dir.mkdir(mode=0o700)
    SqliteWallet.open(data_dir / "wallet.sqlite", None, REGTEST, seed=Seed.from_mnemonic(words, REGTEST)).close()


async def _server_record(conninfo: str, contract_txid: bytes) -> Any:
    from twisted_paychan.store.postgres import PostgresChannelStore

    store = PostgresChannelStore(conninfo, reactor)
    try:
        await store.ready
        return await store.server_channel(contract_txid)
    finally:
        await store.close()


async def _client_record(data_dir: Path, contract_txid: bytes) -> Any:
    from twisted_paychan.store.sqlite import open_store

    store = open_store(str(data_dir), reactor)
    try:
        return await store.client_channel(contract_txid)
    finally:
        await store.close()


async def _confirmations(url: str, cookie: str, txid: bytes) -> int:
    from twisted_paychan.chain.rpc.chain import RpcChain

    chain = RpcChain.from_url(reactor, url, cookie_path=cookie, poll_interval=0.2)
    await chain.start()
    try:
        return (await chain.tx_status(txid)).confirmations
    finally:
        await chain.stop()


@pytest_twisted.ensureDeferred
async def test_node_a_killed_mid_stream_the_client_goes_on_through_node_b(tmp_path, postgres):
    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).choice(range(300, 1200, 150))  # progress is printed every 150
    info = postgres.fresh_database()
    schema = info.rsplit("search_path=", 1)[1].rstrip("'")
    store = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres?options=-c%20search_path%3D{schema}"
    node, url, cookie = await threads.deferToThread(_node, tmp_path)
    port_a, port_b = free_port(), free_port()
    a = b = None
    chain = ["--chain", url, "--rpc-cookie", cookie]
    client = tmp_path / "client"
    try:
        from twisted_paychan.bitcoin.addresses import REGTEST
        from twisted_paychan.wallet.hd import Seed

        words = Seed.generate(REGTEST).mnemonic()
        _wallet_from_words(tmp_path / "a", words)
        a = await threads.deferToThread(_server, tmp_path, "a", port_a, url, cookie, store)
        address = cli("wallet", "--data-dir", str(client), *chain, "--create", "new-address").stdout.strip()
        assert cli("regtest-fund", *chain, address, "5000000").returncode == 0
        common = [*chain, "--data-dir", str(client), "--value", str(VALUE), "--amount", str(AMOUNT)]
        opened = await threads.deferToThread(cli, "pay", "--server", f"tcp:127.0.0.1:{port_a}", *common,
                                             "--count", "5", "--json")
        assert opened.returncode == 0, opened.stderr
        first = json.loads(opened.stdout)
        contract_txid = bytes.fromhex(first["contract_txid"])[::-1]
        words_file = tmp_path / "words"
        words_file.write_text(words + "\n")
        words_file.chmod(0o600)
        restored = cli("wallet", "--data-dir", str(tmp_path / "b"), *chain, "--create", "restore",
                       "--mnemonic-file", str(words_file))
        assert restored.returncode == 0, restored.stderr
        b = await threads.deferToThread(_server, tmp_path, "b", port_b, url, cookie, store)

        def pay_through_a_kill() -> tuple[int, str, str]:
            both = f"tcp:127.0.0.1:{port_a},tcp:127.0.0.1:{port_b}"
            child = subprocess.Popen([sys.executable, "-m", "twisted_paychan.cli", "pay", "--server", both, *common,
                                      "--count", str(COUNT), "--window", str(WINDOW), "--settle", "--json"],
                                     cwd=str(REPO), env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert child.stderr is not None and child.stdout is not None
            said = []
            for line in child.stderr:
                said.append(line)
                if f"payment {kill_at}/{COUNT}" in line:  # up to WINDOW more are in flight
                    a.send_signal(signal.SIGKILL)
            out = child.stdout.read()
            child.wait(timeout=300)
            return child.returncode, out, "".join(said)

        status, out, err = await threads.deferToThread(pay_through_a_kill)
        assert a.wait(timeout=30) == -signal.SIGKILL, f"seed {seed}: node A was not killed"
        assert status == 0, f"seed {seed}: {err}"
        assert f"connection to tcp:127.0.0.1:{port_a} lost after " in err, err
        assert f"resumed on tcp:127.0.0.1:{port_b}" in err, err
        assert "Traceback" not in err
        result = json.loads(out)
        assert result["contract_txid"] == first["contract_txid"]
        assert result["payments"] == COUNT and result["paid"] == COUNT * AMOUNT
        assert "settlement_txid" in result

        paid = result["channel_paid"]
        before = first["channel_paid"]
        lost = paid - before - COUNT * AMOUNT  # in flight at the kill: not acknowledged, in the client's c
        assert 0 <= lost <= WINDOW * AMOUNT and lost % AMOUNT == 0, (paid, before, lost)

        assert cli("regtest-mine", *chain, "1").returncode == 0
        record = await _server_record(postgres.conninfo(schema), contract_txid)
        assert record.best_value == paid, f"seed {seed}"
        settlement = CTransaction.deserialize(record.settlement_tx)
        assert settlement.vout[0].nValue == VALUE - paid  # the client's change, in full
        script = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
        assert verify_input(record.settlement_tx, 0, script.script_pubkey, record.value)
        assert bytes.fromhex(result["settlement_txid"])[::-1] == txid_of(record.settlement_tx)
        assert await _confirmations(url, cookie, txid_of(record.settlement_tx)) >= 1
        assert record.state in (ServerChannelState.SETTLING, ServerChannelState.SETTLED)

        b.send_signal(signal.SIGTERM)
        b.wait(timeout=30)
        mine = await _client_record(client, contract_txid)
        assert VALUE - mine.client_change == paid
        assert mine.state is not ClientChannelState.OPEN
        log_b = (tmp_path / "b.log").read_text()
        assert "Traceback" not in log_b

        # Both nodes down: one line names what each endpoint answered, after the bounded rounds.
        down = await threads.deferToThread(cli, "pay", "--server", f"tcp:127.0.0.1:{port_a},tcp:127.0.0.1:{port_b}",
                                           *common, "--count", "1")
        assert down.returncode == 1, down.stderr
        assert down.stderr.count("\n") == 1 and "Traceback" not in down.stderr, down.stderr
        assert ("could not open a channel: every server failed (4 rounds of 2 endpoints): "
                f"tcp:127.0.0.1:{port_a}: Connection was refused") in down.stderr, down.stderr
        assert f"; tcp:127.0.0.1:{port_b}: Connection was refused" in down.stderr, down.stderr
    finally:
        for proc in (a, b, node):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
