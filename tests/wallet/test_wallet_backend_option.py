"""``twistd paychan --wallet NAME[:ARG]`` and ``--help-wallets``: the backends are found by
Twisted's plugin scan (ours and a third party's on ``PYTHONPATH``), and a mistake is one line and
a non-zero exit, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from twisted_paychan.tap import Options
from twisted_paychan.wallet.backends import (
    IWalletBackendMaker,
    MemoryBackendMaker,
    SqliteBackendMaker,
    installed_makers,
)

REPO = Path(__file__).resolve().parents[2]
#: A third party's backend (``keylog:PATH``), found once this directory is on PYTHONPATH.
KEYLOG_PLUGIN = Path(__file__).resolve().parent / "keylog_plugin"


def twistd(*argv: str, plugins: bool = False) -> subprocess.CompletedProcess[str]:
    path = f"{REPO}{os.pathsep}{KEYLOG_PLUGIN}" if plugins else str(REPO)
    return subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "paychan", *argv],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=120)


def test_sqlite_and_memory_are_installed_plugins() -> None:
    makers = installed_makers()
    assert {"sqlite", "memory"} <= set(makers)
    assert all(IWalletBackendMaker.providedBy(m) for m in makers.values())


def test_the_default_is_sqlite() -> None:
    o = Options()
    o.parseOptions([])
    maker, arg = o["wallet-maker"]
    assert isinstance(maker, SqliteBackendMaker) and arg is None


def test_memory_is_chosen_by_name_also_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "paychan.toml"
    config.write_text('wallet = "memory"\n')
    o = Options()
    o.parseOptions(["--config", str(config)])
    maker, arg = o["wallet-maker"]
    assert isinstance(maker, MemoryBackendMaker) and arg is None


def test_the_memory_description_says_the_keys_die_with_the_process() -> None:
    assert "die with the process" in MemoryBackendMaker.description


@pytest.mark.parametrize("value, message", [
    ("nosuch", "--wallet: no wallet backend named 'nosuch' (installed: "),
    ("sqlite:other.sqlite", "--wallet: the sqlite wallet takes no argument"),
    ("memory:x", "--wallet: the memory wallet takes no argument"),
])
def test_a_bad_wallet_is_a_usage_error(value: str, message: str) -> None:
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(["--wallet", value])
    assert str(e.value).startswith(message)


def test_help_wallets_lists_ours() -> None:
    done = twistd("--help-wallets")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Wallet backends (--wallet NAME[:ARG]):"
    assert [line.split()[0] for line in lines[1:]] == ["memory", "signer:ENDPOINT", "sqlite"]
    assert "die with the process" in lines[1]


def test_help_wallets_lists_a_third_partys_plugin() -> None:
    done = twistd("--help-wallets", plugins=True)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["keylog:PATH", "memory", "signer:ENDPOINT", "sqlite"]


@pytest.mark.parametrize("value, message, plugins", [
    ("nosuch", "--wallet: no wallet backend named 'nosuch' (installed: memory, signer, sqlite; see --help-wallets)", False),
    ("memory:x", "--wallet: the memory wallet takes no argument (--wallet memory)", False),
    ("keylog", "--wallet: the keylog wallet needs a file: --wallet keylog:PATH", True),
])
def test_a_bad_wallet_is_one_line_and_a_non_zero_exit(tmp_path: Path, value: str, message: str, plugins: bool) -> None:
    done = twistd("--data-dir", str(tmp_path / "d"), "--api-listen", "none", "--wallet", value, plugins=plugins)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert message in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "d").exists()  # nothing started


def test_the_backend_example_of_the_docs_runs_as_written(tmp_path: Path) -> None:
    """doc/wallet.md's maker: a plugin of its own that opens a working wallet, and refuses in
    one line what it cannot use."""
    import re

    text = (REPO / "doc" / "wallet.md").read_text()
    [code] = re.findall(r"^```python\n(.*?)^```$", text[text.index("### Writing a backend"):], re.S | re.M)[:1]
    words = tmp_path / "words"
    words.write_text("abandon " * 11 + "about\n")
    check = code + f"""
from twisted.internet.task import Clock
from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.wallet.backends import IServedWallet, open_wallet
wallet = open_wallet((words, {str(words)!r}), ".", MemoryChain(Clock()), REGTEST, None, None)
assert IServedWallet.providedBy(wallet) and wallet.mnemonic().startswith("abandon")
wallet.close()
try:
    words.open({str(tmp_path / "none")!r}, ".", None, REGTEST, None, None)
except WalletUnusable as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=str(tmp_path), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["the words wallet needs a file: --wallet words:PATH",
                                        f"cannot read the words in {tmp_path / 'none'}: No such file or directory"]
