"""Issue 10 through the real command line, every command a subprocess: the README walk-through's
money adds up. A ``twistd paychan`` server on its embedded chain (served over JSON-RPC, as
``make run`` does); a client funds its wallet, pays, settles; after a block its ``wallet
balance`` is the funding minus what it paid minus the contract's fee, to the satoshi. The words
shown when the wallet was made restore it in a new data directory (with a copy of the channel
store) with the same balance; ``wallet send all`` withdraws everything, channel change included.
Then the server is stopped, its chain served by ``paychan regtest``, and its wallet shows what it
was paid (less the settlement fee), and sends it away."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bitcoin.core import CTransaction

from twisted_paychan.bitcoin.addresses import hash160, p2wpkh_script

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
FUNDING = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def paychan(*argv: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code, (argv, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done


def _balance(*argv: str) -> int:
    return int(json.loads(paychan("wallet", *argv, "balance", "--json").stdout)["total"])


def _wait(predicate: Any, what: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{what}: {log.read_text()}"
        try:
            process.wait(timeout=0.1)  # the pause between tries; returns early only if it died
        except subprocess.TimeoutExpired:
            pass


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _rpc(url: str, cookie: Path, method: str, *params: Any) -> Any:
    request = urllib.request.Request(url, json.dumps({"id": 1, "method": method, "params": list(params)}).encode(),
                                     {"Authorization": "Basic " + base64.b64encode(cookie.read_bytes().strip()).decode(),
                                      "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["result"]


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_walkthrough_money_adds_up(tmp_path: Path) -> None:
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    port, rpc_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
         f"--logfile={log}", "paychan", "--data-dir", str(server_dir), "--api-listen", "none", "--fee-rate", "1000",
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--rpc-listen", f"tcp:{rpc_port}:interface=127.0.0.1",
         "--min-channel", "100000"],
        cwd=str(REPO), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    cookie = server_dir / "chain" / ".cookie"
    url = f"http://127.0.0.1:{rpc_port}"
    chain = ("--chain", url, "--rpc-cookie", str(cookie))
    try:
        _wait(lambda: cookie.exists() and _listening(port) and _listening(rpc_port), "server start", server, log)
        made = paychan("wallet", "--data-dir", str(client_dir), *chain, "--create", "new-address")
        address = made.stdout.strip()
        assert "recovery words" in made.stderr
        words = made.stderr.strip().splitlines()[-1].strip()
        assert len(words.split()) == 24
        again = paychan("wallet", "--data-dir", str(client_dir), *chain, "new-address")
        assert "recovery words" not in again.stderr  # shown once, when the wallet was made
        paychan("regtest-fund", *chain, address, str(FUNDING))
        assert _balance("--data-dir", str(client_dir), *chain) == FUNDING

        paid = json.loads(paychan("pay", "--server", f"tcp:127.0.0.1:{port}", "--data-dir", str(client_dir), *chain,
                                  "--value", "200000", "--amount", "1000", "--count", "3", "--settle", "--json").stdout)
        paychan("regtest-mine", *chain, "1")
        db = sqlite3.connect(client_dir / "wallet.sqlite")
        (contract_fee,) = db.execute("SELECT sum(fee) FROM funded").fetchone()
        db.close()
        # Funding, minus what the server was paid (the initial payment the server requires
        # included), minus the contract's fee: nothing missing.
        assert paid["channel_paid"] == paid["paid"] + 1000
        client_balance = _balance("--data-dir", str(client_dir), *chain)
        assert client_balance == FUNDING - paid["channel_paid"] - contract_fee
        coins = json.loads(paychan("wallet", "--data-dir", str(client_dir), *chain, "coins", "--json").stdout)
        assert 200_000 - paid["channel_paid"] in [c["value"] for c in coins]  # the settlement's change

        assert paychan("wallet", "--data-dir", str(client_dir), "seed").stdout.strip() == words
        restored_dir = tmp_path / "restored"
        restored_dir.mkdir(mode=0o700)
        for f in client_dir.iterdir():
            if f.name.startswith("channels"):
                shutil.copy(f, restored_dir / f.name)
        words_file = tmp_path / "words"
        words_file.write_text(words + "\n")
        os.chmod(words_file, 0o600)
        restored = json.loads(paychan("wallet", "--data-dir", str(restored_dir), *chain, "restore",
                                      "--mnemonic-file", str(words_file), "--json").stdout)
        assert restored["total"] == client_balance and restored["keys"]["channel"] == 1

        settlement = CTransaction.deserialize(bytes.fromhex(_rpc(url, cookie, "getrawtransaction", paid["settlement_txid"])))
        settlement_fee = 200_000 - sum(o.nValue for o in settlement.vout)

        stranger = paychan("wallet", "--data-dir", str(tmp_path / "stranger"), *chain, "--create", "new-address").stdout.strip()
        refused = paychan("wallet", "--data-dir", str(client_dir), *chain, "send", stranger, str(10 * FUNDING), code=1)
        assert refused.stderr.startswith("paychan: error: insufficient funds: need ")
        assert f"have {client_balance} sat" in refused.stderr and len(refused.stderr.splitlines()) == 1
        wrong = paychan("wallet", "--data-dir", str(client_dir), *chain, "send",
                        "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "1000", code=1)
        assert "not for regtest" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
        sent = json.loads(paychan("wallet", "--data-dir", str(client_dir), *chain, "send", stranger, "all",
                                  "--fee-rate", "2000", "--json").stdout)
        assert sent["amount"] + sent["fee"] == client_balance
        paychan("regtest-mine", *chain, "1")
        assert _balance("--data-dir", str(client_dir), *chain) == 0
        assert _balance("--data-dir", str(tmp_path / "stranger"), *chain) == sent["amount"]
    finally:
        _stop(server)

    # The settlement paid a key the server's wallet stored for that channel alone.
    db = sqlite3.connect(server_dir / "wallet.sqlite")
    labelled = db.execute("SELECT public_key, label FROM keys WHERE label IS NOT NULL").fetchall()
    db.close()
    assert len(labelled) == 1
    public_key, label = labelled[0]
    assert bytes(settlement.vout[1].scriptPubKey) == p2wpkh_script(hash160(public_key))
    assert bytes(label) == bytes(settlement.vin[0].prevout.hash)  # the contract's txid

    # The server stopped: its chain served by `paychan regtest`, its wallet shows its income.
    node = subprocess.Popen(
        [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(server_dir),
         "--rpc-listen", "tcp:0:interface=127.0.0.1", "--json"],
        cwd=str(REPO), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert node.stdout is not None
        info = json.loads(node.stdout.readline())
        chain = ("--chain", info["url"], "--rpc-cookie", info["cookie"])
        assert _balance("--data-dir", str(server_dir), *chain) == paid["channel_paid"] - settlement_fee
        embedded = paychan("wallet", "--data-dir", str(server_dir), "send", stranger, "all", code=1)
        assert "forgets its mempool" in embedded.stderr
        sent = json.loads(paychan("wallet", "--data-dir", str(server_dir), *chain, "send", stranger, "all",
                                  "--json").stdout)
        assert sent["amount"] + sent["fee"] == paid["channel_paid"] - settlement_fee
    finally:
        _stop(node)
