"""Issue 16, part 2: no secret in anything written.

A full session with every secret set (the node's RPC password, the server's and the client's
wallet passphrases, then the node's cookie), the node and the server at ``--verbose``: the
node runs as ``paychan regtest``, the server as ``twistd paychan`` on it, the client pays and
settles with ``paychan pay``, a command even gives the password in the URL. Then everything
written (logs, stdout, stderr of every process) is searched for every secret, for every
private key of both wallets, and for both wallets' seeds (words and entropy). The one place the
client's words may appear is where they are meant to: the stderr of the command that created
its wallet, once.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.wallet import SqliteWallet

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
RPC_PASSWORD = "rpc-pw-7c1e0f55d1"
SERVER_PASSPHRASE = "server-pp-4b9a27"
CLIENT_PASSPHRASE = "client-pp-e03d91"


def _secret_file(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


class Written:
    """Everything the processes of the session wrote."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.files: list[Path] = []

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), env=ENV,
                              capture_output=True, text=True, timeout=120)
        self.texts += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
        return done

    def everything(self) -> str:
        return "\n".join(self.texts + [p.read_text(errors="replace") for p in self.files if p.exists()])


def _start_node(data_dir: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[str], Any]:
    node = subprocess.Popen(
        [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(data_dir), "--verbose",
         "--rpc-listen", "tcp:0:interface=127.0.0.1", "--json", *extra],
        stdout=subprocess.PIPE, stderr=log.open("a"), text=True, env=ENV, cwd=str(REPO))
    assert node.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(node.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=60), log.read_text()
    line = node.stdout.readline()
    assert line, log.read_text()
    return node, json.loads(line)


def _stop(process: subprocess.Popen[str], written: Written) -> None:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    written.texts.append(out or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(process: subprocess.Popen[str], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        try:
            process.wait(timeout=0.1)  # the pause between tries; returns early only if it died
        except subprocess.TimeoutExpired:
            pass
    raise AssertionError(f"the server did not listen: {log.read_text()}")


def _private_keys(path: Path, passphrase: str) -> list[bytes]:
    wallet = SqliteWallet.open(path, None, REGTEST, passphrase=passphrase)
    try:
        return [key.secret for key in wallet._keys.values()]
    finally:
        wallet.close()


def _seed(path: Path, passphrase: str) -> tuple[str, bytes]:
    wallet = SqliteWallet.open(path, None, REGTEST, passphrase=passphrase)
    try:
        assert wallet._seed is not None
        return wallet.mnemonic(), wallet._seed.entropy
    finally:
        wallet.close()


def test_a_full_session_writes_no_secret(tmp_path: Path) -> None:
    written = Written()
    password_file = _secret_file(tmp_path / "rpc-password", RPC_PASSWORD)
    node_log = tmp_path / "node.log"
    written.files.append(node_log)
    node, info = _start_node(tmp_path / "node", node_log, "--rpc-user", "alice", "--rpc-password-file", password_file)
    url = info["url"]
    login = ("--chain", url, "--rpc-user", "alice", "--rpc-password-file", password_file)
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    server_log = tmp_path / "server.log"
    written.files.append(server_log)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
         f"--logfile={server_log}", "paychan", "--verbose", "--data-dir", str(server_dir), *login,
         "--wallet-passphrase-file", _secret_file(tmp_path / "server-pp", SERVER_PASSPHRASE),
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--min-channel", "100000",
         "--api-listen", "tcp:0:interface=127.0.0.1"],
        cwd=str(REPO), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(server, port, server_log)
        client_pp = ("--passphrase-file", _secret_file(tmp_path / "client-pp", CLIENT_PASSPHRASE))
        created = written.run("wallet", "--data-dir", str(client_dir), *login, *client_pp, "--create", "new-address")
        address = created.stdout.strip()
        written.texts.remove(created.stderr)  # where the words are shown, on purpose: checked below
        written.run("regtest-fund", *login, address, "1000000")
        paid = written.run("pay", "--server", f"tcp:127.0.0.1:{port}", "--data-dir", str(client_dir), *login,
                           *client_pp, "--value", "200000", "--amount", "1000", "--count", "3", "--settle", "--json")
        result = json.loads(paid.stdout)
        assert result["paid"] == 3000 and "settlement_txid" in result
        written.run("channels", "--data-dir", str(client_dir), "--json")
        written.run("settle", "--data-dir", str(server_dir), "--all", "--json")
        # A password in the URL still works, and is warned about without being repeated.
        in_url = url.replace("http://", f"http://alice:{RPC_PASSWORD}@")
        warned = written.run("regtest-mine", "--chain", in_url, "1")
        assert "carries a password" in warned.stderr
        # A wrong password is refused without being echoed.
        wrong = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "regtest-mine", "--chain",
                                url.replace("http://", "http://alice:not-the-password@"), "1"],
                               cwd=str(REPO), env=ENV, capture_output=True, text=True, timeout=60)
        assert wrong.returncode == 1 and "not-the-password" not in wrong.stdout + wrong.stderr
    finally:
        _stop(server, written)
        _stop(node, written)

    # The cookie: the same node without a user writes one; a command logs in with it.
    node, info = _start_node(tmp_path / "node", node_log)
    try:
        cookie = Path(info["cookie"])
        cookie_value = cookie.read_text().strip()
        assert os.stat(cookie).st_mode & 0o077 == 0
        written.run("regtest-mine", "--chain", info["url"], "--rpc-cookie", str(cookie), "--json", "1")
        written.run("wallet", "--data-dir", str(client_dir), "--chain", info["url"], "--rpc-cookie", str(cookie),
                    *client_pp, "balance")
    finally:
        _stop(node, written)

    text = written.everything()
    assert "Traceback" not in text
    secrets = {
        "the RPC password": RPC_PASSWORD,
        "the server's passphrase": SERVER_PASSPHRASE,
        "the client's passphrase": CLIENT_PASSPHRASE,
        "the basic-auth header": base64.b64encode(f"alice:{RPC_PASSWORD}".encode()).decode(),
        "the cookie": cookie_value.partition(":")[2],
        "the cookie's header": base64.b64encode(cookie_value.encode()).decode(),
    }
    keys = _private_keys(server_dir / "wallet.sqlite", SERVER_PASSPHRASE) + _private_keys(
        client_dir / "wallet.sqlite", CLIENT_PASSPHRASE)
    assert len(keys) >= 4
    for n, key in enumerate(keys):
        secrets[f"private key {n}"] = key.hex()
        secrets[f"private key {n} (reversed)"] = key[::-1].hex()
    for side, directory, passphrase in (("server", server_dir, SERVER_PASSPHRASE), ("client", client_dir, CLIENT_PASSPHRASE)):
        words, entropy = _seed(directory / "wallet.sqlite", passphrase)
        secrets[f"the {side}'s words"] = words
        secrets[f"the {side}'s words, one a line"] = "\n".join(words.split()[:3])
        secrets[f"the {side}'s seed entropy"] = entropy.hex()
        if side == "client":
            assert created.stderr.count(words) == 1 and entropy.hex() not in created.stderr
    lowered = text.lower()
    leaked = [name for name, value in secrets.items() if value.lower() in lowered]
    assert not leaked, leaked
    # Not in the files either: both wallets are encrypted, so their seeds are sealed.
    for directory in (server_dir, client_dir):
        raw = b"".join(p.read_bytes() for p in directory.glob("wallet.sqlite*"))
        for name, value in secrets.items():
            if "seed" in name or "words" in name:
                assert value.encode() not in raw, name
    # What was written is the session's, not nothing: the server logged the payments.
    assert "paychan server" in server_log.read_text()
