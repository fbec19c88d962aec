"""Issue 16, part 1: ``twistd paychan --wallet-passphrase-file`` and ``paychan wallet encrypt``.

The server creates its wallet encrypted or unlocks it at start; a wrong or missing passphrase
stops it with one line, before it listens. ``paychan wallet encrypt`` replaces a plaintext
wallet by an encrypted copy, and a process killed at any point of that leaves one of the two.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.tap import ChannelServerService, Options, StartupRefused
from twisted_paychan.wallet import SqliteWallet
from twisted_paychan.wallet.errors import PassphraseRequired, WrongPassphrase

REPO = Path(__file__).resolve().parents[2]


def _options(data_dir: Path, *extra: str) -> Options:
    o = Options()
    o.parseOptions(["--data-dir", str(data_dir), "--listen", "tcp:0:interface=127.0.0.1",
                    "--rpc-listen", "none", "--admin-listen", "none", "--api-listen", "none", *extra])
    return o


def _reactor() -> object:
    from twisted.internet import reactor

    return reactor


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return path


def _public_keys(path: Path) -> set[bytes]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT public_key FROM keys")}
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_the_server_creates_its_wallet_encrypted_and_unlocks_it_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    passphrase = _secret(tmp_path / "pass", "server passphrase")
    svc = ChannelServerService(_options(data, "--wallet-passphrase-file", str(passphrase)), _reactor())
    svc.startService()
    assert svc.wallet is not None and svc.wallet.is_encrypted
    await svc.stopService()
    with pytest.raises(PassphraseRequired):
        SqliteWallet.open(data / "wallet.sqlite", None, REGTEST)
    svc = ChannelServerService(_options(data, "--wallet-passphrase-file", str(passphrase)), _reactor())
    svc.startService()
    assert svc.wallet is not None and svc.wallet.is_encrypted
    await svc.stopService()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("case, message", [
    ("wrong", "does not unlock the wallet"),
    ("missing", "is encrypted: give its passphrase with --wallet-passphrase-file"),
    ("unreadable", "cannot read the wallet passphrase file"),
])
async def test_a_wrong_or_missing_passphrase_refuses_before_listening(tmp_path: Path, case: str, message: str) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    wallet = SqliteWallet.open(data / "wallet.sqlite", None, REGTEST, passphrase="right")
    wallet.close()
    extra = {
        "wrong": ("--wallet-passphrase-file", str(_secret(tmp_path / "wrong", "not it"))),
        "missing": (),
        "unreadable": ("--wallet-passphrase-file", str(tmp_path / "no-such-file")),
    }[case]
    svc = ChannelServerService(_options(data, *extra), _reactor())
    with pytest.raises(StartupRefused) as refused:
        svc.startService()
    assert message in refused.value.reason
    assert "not it" not in str(refused.value.code)
    assert svc.channels_service.factory is None and list(svc.channels_service) == []  # nothing listens
    assert svc.chain is None  # what had started (the chain) was closed again
    # ... so the same data directory opens with the right passphrase
    svc = ChannelServerService(_options(data, "--wallet-passphrase-file", str(_secret(tmp_path / "right", "right"))),
                               _reactor())
    svc.startService()
    await svc.stopService()


def test_a_passphrase_for_a_plaintext_wallet_says_to_encrypt_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    SqliteWallet.open(data / "wallet.sqlite", None, REGTEST).close()
    svc = ChannelServerService(_options(data, "--wallet-passphrase-file", str(_secret(tmp_path / "p", "x"))),
                               _reactor())
    with pytest.raises(StartupRefused, match="paychan wallet encrypt"):
        svc.startService()


def _twistd(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
            "--logfile=-", "paychan", "--data-dir", str(data), "--listen", "tcp:0:interface=127.0.0.1",
            "--rpc-listen", "none", "--admin-listen", "none", "--api-listen", "none", *extra]
    return subprocess.run(argv, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)


def test_twistd_with_a_wrong_passphrase_exits_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    SqliteWallet.open(data / "wallet.sqlite", None, REGTEST, passphrase="right").close()
    done = _twistd(data, "--wallet-passphrase-file", str(_secret(tmp_path / "wrong", "wrong one")))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "not starting" in line]
    assert len(lines) == 1 and "does not unlock the wallet" in lines[0], output
    assert "wrong one" not in output
    assert "listening" not in output


def _paychan(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO),
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=60)


def _plaintext_wallet(data: Path) -> tuple[Path, set[bytes], list[bytes]]:
    data.mkdir(mode=0o700)
    path = data / "wallet.sqlite"
    wallet = SqliteWallet.open(path, None, REGTEST)
    for _ in range(3):
        wallet.new_channel_key()
    secrets = [k.secret for k in wallet._keys.values()]
    wallet.close()
    return path, _public_keys(path), secrets


def test_wallet_encrypt_replaces_the_plaintext_file(tmp_path: Path) -> None:
    path, keys, secrets = _plaintext_wallet(tmp_path / "data")
    passphrase = _secret(tmp_path / "pass", "new passphrase")
    done = _paychan("wallet", "encrypt", "--data-dir", str(path.parent), "--passphrase-file", str(passphrase))
    assert done.returncode == 0, done.stderr
    assert "new passphrase" not in done.stdout + done.stderr
    raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith("wallet.sqlite"))
    assert secrets and not any(secret in raw for secret in secrets)  # no plaintext key left anywhere
    assert os.stat(path).st_mode & 0o077 == 0
    assert not (path.parent / "wallet.sqlite.encrypting").exists()
    with pytest.raises(WrongPassphrase):
        SqliteWallet.open(path, None, REGTEST, passphrase="other")
    wallet = SqliteWallet.open(path, None, REGTEST, passphrase="new passphrase")
    assert set(wallet._keys) == keys and sorted(k.secret for k in wallet._keys.values()) == sorted(secrets)
    wallet.close()
    again = _paychan("wallet", "encrypt", "--data-dir", str(path.parent), "--passphrase-file", str(passphrase))
    assert again.returncode == 1 and "already encrypted" in again.stderr


def test_wallet_encrypt_refuses_a_wallet_in_use(tmp_path: Path) -> None:
    path, _, _ = _plaintext_wallet(tmp_path / "data")
    wallet = SqliteWallet.open(path, None, REGTEST)
    try:
        done = _paychan("wallet", "encrypt", "--data-dir", str(path.parent),
                        "--passphrase-file", str(_secret(tmp_path / "p", "x")))
    finally:
        wallet.close()
    assert done.returncode == 1 and "already open" in done.stderr
    wallet = SqliteWallet.open(path, None, REGTEST)
    assert not wallet.is_encrypted
    wallet.close()


@pytest.mark.parametrize("point, encrypted", [("wallet-encrypt-written", False), ("wallet-encrypt-replaced", True)])
def test_a_kill_during_wallet_encrypt_leaves_the_old_or_the_new_wallet(tmp_path: Path, point: str, encrypted: bool) -> None:
    path, keys, secrets = _plaintext_wallet(tmp_path / "data")
    passphrase = _secret(tmp_path / "pass", "crash passphrase")
    argv = ("wallet", "encrypt", "--data-dir", str(path.parent), "--passphrase-file", str(passphrase))
    done = _paychan(*argv, env={"PAYCHAN_CRASH_AT": point})
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert path.exists()
    if encrypted:
        wallet = SqliteWallet.open(path, None, REGTEST, passphrase="crash passphrase")
    else:
        wallet = SqliteWallet.open(path, None, REGTEST)  # the old, plaintext file, whole
    assert wallet.is_encrypted is encrypted
    assert set(wallet._keys) == keys and sorted(k.secret for k in wallet._keys.values()) == sorted(secrets)
    wallet.close()
    # The next attempt finishes the job (or says it is done), whatever the crash left behind.
    again = _paychan(*argv)
    if encrypted:
        assert again.returncode == 1 and "already encrypted" in again.stderr
    else:
        assert again.returncode == 0, again.stderr
    wallet = SqliteWallet.open(path, None, REGTEST, passphrase="crash passphrase")
    assert set(wallet._keys) == keys
    wallet.close()


def test_a_daemonized_twistd_reports_the_refusal_to_its_parent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    SqliteWallet.open(data / "wallet.sqlite", None, REGTEST, passphrase="right").close()
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            f"--pidfile={tmp_path / 'twistd.pid'}", f"--logfile={tmp_path / 'twistd.log'}", "paychan",
            "--data-dir", str(data), "--listen", "tcp:0:interface=127.0.0.1", "--rpc-listen", "none",
            "--admin-listen", "none", "--api-listen", "none", "--wallet-passphrase-file", str(_secret(tmp_path / "wrong", "wrong one"))]
    done = subprocess.run(argv, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "paychan: not starting: the passphrase in" in done.stderr and "Traceback" not in done.stderr
    assert "wrong one" not in done.stderr + (tmp_path / "twistd.log").read_text()
