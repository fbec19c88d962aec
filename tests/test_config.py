"""``twistd paychan --config FILE``: TOML or INI with the options' own names, each value through
the option's own checks, the command line winning, and a mistake in the file refused in one
line that names the file (a real twistd in a subprocess for that line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twisted_paychan.config import config_path_in
from twisted_paychan.tap import Options, StartupRefused

REPO = Path(__file__).resolve().parents[1]


def parsed(*argv: str) -> Options:
    o = Options()
    o.parseOptions(list(argv))
    return o


def test_toml_sets_the_options(tmp_path: Path) -> None:
    f = tmp_path / "paychan.toml"
    f.write_text('listen = "tcp:5000"\ndata-dir = "/srv/paychan"\nmin_channel = 200000\nverbose = true\n'
                 'versions = "2"\nallow-insecure-permissions = false\n')
    o = parsed("--config", str(f))
    assert (o["listen"], o["data-dir"], o["min-channel"], o["verbose"]) == ("tcp:5000", "/srv/paychan", 200_000, 1)
    assert o["settings"].min_channel_size == 200_000 and o["settings"].versions == frozenset({2})
    assert not o["allow-insecure-permissions"]


def test_toml_paychan_table_and_ini(tmp_path: Path) -> None:
    t = tmp_path / "a.toml"
    t.write_text('[paychan]\nfee-rate = 2000\n')
    assert parsed(f"--config={t}")["fee-rate"] == 2000
    i = tmp_path / "paychan.ini"
    i.write_text("[paychan]\nfee-rate = 3000\nchain = http://127.0.0.1:18443\nverbose = yes\n")
    o = parsed("--config", str(i))
    assert (o["fee-rate"], o["chain"], o["verbose"]) == (3000, "http://127.0.0.1:18443", 1)


def test_the_command_line_wins(tmp_path: Path) -> None:
    f = tmp_path / "paychan.toml"
    f.write_text('listen = "tcp:5000"\nmin-channel = 200000\n')
    o = parsed("--min-channel", "300000", "--config", str(f))
    assert (o["listen"], o["min-channel"]) == ("tcp:5000", 300_000)
    assert o["settings"].min_channel_size == 300_000


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.toml", 'bogus = 1\n', "unknown option 'bogus'"),
        ("a.toml", 'v = true\n', "unknown option 'v'"),
        ("a.toml", 'config = "other.toml"\n', "unknown option 'config'"),
        ("a.toml", 'min-channel = "lots"\n', "--min-channel must be an integer, not 'lots'"),
        ("a.toml", 'min-channel = -5\n', "--min-channel must not be negative"),
        ("a.toml", 'verbose = "maybe"\n', "verbose is a flag: give true or false, not 'maybe'"),
        ("a.toml", 'listen = true\n', "listen takes a value, not true"),
        ("a.toml", 'listen = ["a"]\n', "listen must be a string, a number or true/false, not a list"),
        ("a.toml", 'listen = \n', "not valid TOML"),
        ("a.ini", "[server]\nlisten = x\n", "unknown section [server]"),
        ("a.ini", "listen = x\n", "not valid INI"),
    ],
)
def test_mistakes_in_the_file_are_one_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(StartupRefused) as refused:
        parsed("--config", str(f))
    assert message in refused.value.reason and str(f) in refused.value.reason
    assert "\n" not in refused.value.reason


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StartupRefused, match="cannot read the config file .*missing.toml"):
        parsed("--config", str(tmp_path / "missing.toml"))


def test_config_path_in() -> None:
    assert config_path_in(["--listen", "x", "--config", "a", "--config=b"]) == "b"
    assert config_path_in(["--", "--config", "a"]) is None
    assert config_path_in(["--config"]) is None


def test_twistd_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    f = tmp_path / "paychan.toml"
    f.write_text('min-channel = "lots"\n')
    done = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
         "paychan", "--config", str(f), "--data-dir", str(tmp_path / "data")],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"paychan: not starting: {f}: --min-channel must be an integer, not 'lots'"]
    assert not (tmp_path / "data").exists()
