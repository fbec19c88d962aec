"""``paychan wallet seed`` and ``restore`` in-process, and the one-line errors of ``seed``,
``restore`` and ``send`` (the flow with money is ``test_cli_wallet_money``)."""

from __future__ import annotations

import os
from pathlib import Path

from cli_helpers import ok, paychan
from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.wallet import SqliteWallet
from twisted_paychan.wallet.crypto import ScryptParams

CHEAP = ScryptParams(n=2**10, r=8, p=1)


def _secret(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def test_seed_of_an_encrypted_wallet(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    wallet = SqliteWallet.open(data / "wallet.sqlite", None, REGTEST, passphrase="pp-1", scrypt=CHEAP)
    words = wallet.mnemonic()
    wallet.close()
    shown = ok("wallet", "--data-dir", str(data), "--passphrase-file", _secret(tmp_path / "pp", "pp-1"), "seed", "--json")
    assert shown.json == {"mnemonic": words, "words": 24, "network": "regtest"}
    # No passphrase and no terminal to ask on: one line saying how to give it.
    asked = paychan("wallet", "--data-dir", str(data), "seed")
    assert asked.code == 1 and asked.stderr == "paychan: error: give the wallet's passphrase with --passphrase-file (no terminal to ask on)\n"
    wrong = paychan("wallet", "--data-dir", str(data), "--passphrase-file", _secret(tmp_path / "pp2", "nope"), "seed")
    assert wrong.code == 1 and "does not unlock" in wrong.stderr and words not in wrong.stderr + wrong.stdout


def test_seed_errors(tmp_path: Path) -> None:
    missing = paychan("wallet", "--data-dir", str(tmp_path), "seed")
    assert missing.code == 1 and "there is no wallet at" in missing.stderr


def test_restore_refuses_bad_words_and_an_existing_wallet(tmp_path: Path) -> None:
    data = tmp_path / "d"
    bad = paychan("wallet", "--data-dir", str(data), "restore", "--mnemonic-file",
                  _secret(tmp_path / "words", "abandon " * 11 + "abandon"))
    assert bad.code == 1 and "not a BIP39 mnemonic" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert not (data / "wallet.sqlite").exists()
    words = "abandon " * 11 + "about"
    restored = ok("wallet", "--data-dir", str(data), "restore", "--mnemonic-file", _secret(tmp_path / "w2", words), "--json")
    assert restored.json["total"] == 0 and restored.json["keys"]["receive"] == 0
    assert ok("wallet", "--data-dir", str(data), "seed").stdout.strip() == words
    again = paychan("wallet", "--data-dir", str(data), "restore", "--mnemonic-file", str(tmp_path / "w2"))
    assert again.code == 1 and "restore into a new data directory" in again.stderr
    no_terminal = paychan("wallet", "--data-dir", str(tmp_path / "e"), "restore")
    assert no_terminal.code == 1 and "--mnemonic-file" in no_terminal.stderr


def test_send_errors(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    made = ok("wallet", "--data-dir", data, "--create", "new-address")
    assert "recovery words" in made.stderr and "recovery words" not in made.stdout
    not_a_number = paychan("wallet", "--data-dir", data, "send", made.stdout.strip(), "lots")
    assert not_a_number.code == 1 and "AMOUNT is a number of sat or 'all'" in not_a_number.stderr
    embedded = paychan("wallet", "--data-dir", data, "send", made.stdout.strip(), "all")
    assert embedded.code == 1 and "forgets its mempool" in embedded.stderr
