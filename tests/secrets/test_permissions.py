"""Issue 16, part 3: private data directories, as ssh keeps its keys.

The server and the CLI create the data directory 0700 and the wallet and the cookie 0600; a
server that finds its data directory, its wallet or a secret file open to group or others
refuses to start with one line, unless ``--allow-insecure-permissions``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import pytest_twisted

from cli_helpers import ok
from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.secretfiles import InsecurePermissions, check_private, read_secret_file
from twisted_paychan.tap import ChannelServerService, Options, StartupRefused
from twisted_paychan.wallet import SqliteWallet


def _reactor() -> object:
    from twisted.internet import reactor

    return reactor


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _service(data_dir: Path, *extra: str) -> ChannelServerService:
    o = Options()
    o.parseOptions(["--data-dir", str(data_dir), "--listen", "tcp:0:interface=127.0.0.1",
                    "--rpc-listen", "tcp:0:interface=127.0.0.1", "--admin-listen", "none", "--api-listen", "none", *extra])
    return ChannelServerService(o, _reactor())


@pytest.fixture(autouse=True)
def open_umask():
    """The usual umask, under which files are readable by all unless created otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest_twisted.ensureDeferred
async def test_the_server_creates_its_data_directory_and_secrets_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    svc = _service(data)
    svc.startService()
    try:
        assert _mode(data) == 0o700
        assert _mode(data / "wallet.sqlite") == 0o600
        assert _mode(data / "chain") == 0o700
        assert _mode(data / "chain" / ".cookie") == 0o600
    finally:
        await svc.stopService()


@pytest.mark.parametrize("loosen, what", [
    ("data", "the data directory"),
    ("wallet", "the wallet"),
    ("passphrase", "the --wallet-passphrase-file"),
])
def test_a_server_refuses_secrets_others_can_read(tmp_path: Path, loosen: str, what: str) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    passphrase = tmp_path / "pp"
    passphrase.write_text("pass\n")
    os.chmod(passphrase, 0o600)
    SqliteWallet.open(data / "wallet.sqlite", None, REGTEST, passphrase="pass").close()
    target, mode = {"data": (data, 0o755), "wallet": (data / "wallet.sqlite", 0o640), "passphrase": (passphrase, 0o644)}[loosen]
    os.chmod(target, mode)
    svc = _service(data, "--wallet-passphrase-file", str(passphrase))
    with pytest.raises(StartupRefused) as refused:
        svc.startService()
    assert refused.value.reason.startswith(f"{what} {target} is accessible by others")
    assert "--allow-insecure-permissions" in refused.value.reason and "\n" not in str(refused.value.code)
    assert svc.chain is None and svc.wallet is None  # refused before anything started


@pytest_twisted.ensureDeferred
async def test_allow_insecure_permissions_overrides(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    svc = _service(data, "--allow-insecure-permissions")
    svc.startService()
    await svc.stopService()
    assert _mode(data) == 0o755  # told to leave it, it does not "fix" it either


def test_the_cli_creates_a_client_data_directory_private(tmp_path: Path) -> None:
    data = tmp_path / "client"
    ok("wallet", "--data-dir", str(data), "--create", "new-address")
    assert _mode(data) == 0o700 and _mode(data / "wallet.sqlite") == 0o600


def test_secret_files(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_text("first line\r\nsecond\n")
    assert read_secret_file(f, "x") == "first line"
    os.chmod(f, 0o600)
    check_private(f, "x")
    check_private(tmp_path / "missing", "x")
    os.chmod(f, 0o604)
    with pytest.raises(InsecurePermissions, match="chmod 600"):
        check_private(f, "x")
