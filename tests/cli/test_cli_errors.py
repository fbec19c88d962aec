"""Ordinary mistakes on the command line: one line naming the problem and what to do, a
non-zero exit, a traceback only with ``--debug``; a data directory is never made by accident
(``--create``); ``paychan --version``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import paychan
from twisted_paychan import __version__

REPO = Path(__file__).resolve().parents[2]


def one_line(result, message: str) -> None:
    assert result.code == 1, result.stderr
    assert result.stderr == f"paychan: error: {message}\n" or (
        result.stderr.startswith("paychan: error: ") and message in result.stderr
        and result.stderr.count("\n") == 1), result.stderr


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "--version"], cwd=str(REPO),
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip() == f"paychan (twisted-paychan) {__version__}"


@pytest.mark.parametrize("command", [("wallet", "balance"), ("regtest-mine", "1"),
                                     ("pay", "--server", "tcp:127.0.0.1:1", "--value", "100000", "--amount", "1"),
                                     ("watch",), ("close", "--server", "tcp:127.0.0.1:1")])
def test_a_missing_data_dir_is_not_created(tmp_path: Path, command: tuple[str, ...]) -> None:
    typo = tmp_path / "clinet-data"
    result = paychan(command[0], "--data-dir", str(typo), *command[1:])
    one_line(result, f"there is no data directory {typo}: check the path, or give --create to make a new one")
    assert not typo.exists()


def test_a_data_dir_without_a_chain_is_not_given_one(tmp_path: Path) -> None:
    result = paychan("wallet", "--data-dir", str(tmp_path), "balance")
    one_line(result, f"{tmp_path} holds no embedded chain: give --chain URL to use a running node")
    assert not (tmp_path / "chain").exists() and not (tmp_path / "wallet.sqlite").exists()


@pytest.mark.parametrize("command", [("balance",), ("coins",), ("new-address",)])
def test_a_server_dir_whose_keys_are_elsewhere_gets_no_wallet_by_accident(tmp_path: Path,
                                                                        command: tuple[str, ...]) -> None:
    """A server on another wallet backend (``--wallet signer:...``) leaves channels but no
    ``wallet.sqlite``: an offline ``paychan wallet`` there would make a new wallet, unrelated to
    the server's keys, that looks like the server's. It is refused unless ``--create`` asks."""
    (tmp_path / "channels.sqlite").write_bytes(b"")
    result = paychan("wallet", "--data-dir", str(tmp_path), "--chain", "http://127.0.0.1:1", *command)
    one_line(result, f"{tmp_path} is a server's data directory with no wallet.sqlite: its keys are in another "
                     "wallet backend")
    assert not (tmp_path / "wallet.sqlite").exists()


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("")
    one_line(paychan("wallet", "--data-dir", str(path), "--create", "balance"),
             f"--data-dir {path} is a file, not a directory")


def test_a_traceback_only_with_debug(tmp_path: Path) -> None:
    typo = str(tmp_path / "nope")
    quiet = paychan("wallet", "--data-dir", typo, "balance")
    assert "Traceback" not in quiet.stderr
    loud = paychan("wallet", "--data-dir", typo, "--debug", "balance")
    assert loud.code == 1 and loud.stderr.startswith("paychan: error: there is no data directory")
    assert "Traceback (most recent call last)" in loud.stderr


def test_pay_help_explains_the_initial_payment_and_stopping() -> None:
    done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "pay", "--help"], cwd=str(REPO),
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "initial payment the server requires (its --min-payment, 1,000 sat by default)" in text
    assert "Ctrl-C or SIGTERM stops between two payments (exit 130 or 143)" in text
