"""``paychan`` in-process on the embedded node (``--chain embedded``): wallet, regtest-fund,
regtest-mine, ``--json``, and error reporting (messages and exit codes, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bitcoin.core import CTransaction

from cli_helpers import ok, paychan
from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.chain.embedded.node import RegtestNode


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "data")


def test_new_address_is_a_regtest_address(data_dir: str) -> None:
    address = ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip()
    assert address.startswith("bcrt1q")
    address_to_script(address, REGTEST)
    legacy = ok("wallet", "--data-dir", data_dir, "--create", "--json", "new-address", "--type", "p2pkh").json
    assert legacy["type"] == "p2pkh" and legacy["address"][0] in "mn" and legacy["network"] == "regtest"
    assert (Path(data_dir) / "wallet.sqlite").exists()
    assert (Path(data_dir) / "chain" / "paychan.lock").exists()  # the channel server's layout


def test_fund_then_balance_and_coins(data_dir: str) -> None:
    address = ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip()
    funded = ok("regtest-fund", "--data-dir", data_dir, "--json", address, "250000").json
    assert funded["amount"] == 250000 and funded["vout"] == 0
    assert funded["outpoint"] == f"{funded['txid']}:0"
    assert funded["height"] == 101  # one coinbase, 99 to mature it, one to confirm
    tx = CTransaction.deserialize(bytes.fromhex(funded["hex"]))
    assert tx.vout[0].nValue == 250000
    assert bytes(tx.vout[0].scriptPubKey) == address_to_script(address, REGTEST)
    assert tx.GetTxid()[::-1].hex() == funded["txid"]

    balance = ok("wallet", "--data-dir", data_dir, "--create", "--json", "balance").json
    assert (balance["confirmed"], balance["unconfirmed"], balance["total"]) == (250000, 0, 250000)
    assert balance["confirmed_btc"] == 0.0025
    human = ok("wallet", "--data-dir", data_dir, "--create", "balance").stdout
    assert "confirmed:   250000 sat (0.00250000 BTC)" in human
    [coin] = ok("wallet", "--data-dir", data_dir, "--create", "--json", "coins").json
    assert (coin["txid"], coin["vout"], coin["value"], coin["height"]) == (funded["txid"], 0, 250000, 101)
    assert f"{funded['txid']}:0" in ok("wallet", "--data-dir", data_dir, "--create", "coins").stdout


def test_fund_human_output_names_the_outpoint_and_the_tx(data_dir: str) -> None:
    address = ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip()
    lines = ok("regtest-fund", "--data-dir", data_dir, address, "1000").stdout.splitlines()
    assert lines[0] == f"funded {address} with 1000 sat (0.00001000 BTC)"
    assert lines[1].startswith("outpoint: ") and lines[1].endswith(":0")
    raw = bytes.fromhex(lines[-1].removeprefix("tx: "))
    assert CTransaction.deserialize(raw).vout[0].nValue == 1000


def test_fund_more_than_one_block_reward(data_dir: str) -> None:
    address = ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip()
    funded = ok("regtest-fund", "--data-dir", data_dir, "--json", address, str(75 * 100_000_000)).json
    tx = CTransaction.deserialize(bytes.fromhex(funded["hex"]))
    assert len(tx.vin) == 2  # two 50 BTC coinbases
    assert ok("wallet", "--data-dir", data_dir, "--create", "--json", "balance").json["confirmed"] == 75 * 100_000_000


def test_funding_inputs_are_low_s_and_pass_core(data_dir: str) -> None:
    from twisted_paychan.cli.regtest_tx import KeyCoin, ThrowawayKey, build_funding_tx
    from twisted_paychan.chain.types import OutPoint

    key = ThrowawayKey()
    coins = [KeyCoin(OutPoint(bytes([i]) * 32, 0), 50_000) for i in (1, 2)]
    target = address_to_script(ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip(), REGTEST)
    funding = build_funding_tx(key, coins, target, 60_000, 1000)
    tx = CTransaction.deserialize(funding.raw)
    assert [o.nValue for o in tx.vout] == [60_000, 100_000 - 60_000 - funding.fee]
    for index in range(2):
        assert consensus.verify_input(funding.raw, index, key.script_pubkey, 50_000)
        sig = tx.wit.vtxinwit[index].scriptWitness.stack[0]
        assert sig[-1] == 1
    with pytest.raises(ValueError, match="cannot pay"):
        build_funding_tx(key, coins, target, 100_000, 1000)


def test_mine(data_dir: str) -> None:
    mined = ok("regtest-mine", "--data-dir", data_dir, "--create", "--json", "3").json
    assert len(mined["blocks"]) == 3 and mined["height"] == 3
    assert mined["address"].startswith("bcrt1q")  # P2WSH(OP_TRUE)
    address = ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip()
    human = ok("regtest-mine", "--data-dir", data_dir, "--create", "2", "--address", address).stdout
    assert human.strip() == f"mined 2 block(s) to {address}; the tip is now at height 5"


def test_encrypted_wallet_needs_its_passphrase(data_dir: str, tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    ok("wallet", "--data-dir", data_dir, "--create", "--passphrase-file", str(secret), "new-address")
    ok("wallet", "--data-dir", data_dir, "--create", "balance", "--passphrase-file", str(secret))  # either side
    missing = paychan("wallet", "--data-dir", data_dir, "balance")
    assert missing.code == 1 and "is encrypted: give its passphrase with --passphrase-file" in missing.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple")
    assert "does not unlock" in paychan("wallet", "--data-dir", data_dir, "--passphrase-file", str(wrong), "balance").stderr
    unreadable = paychan("wallet", "--data-dir", data_dir, "--passphrase-file", str(tmp_path / "none"), "balance")
    assert unreadable.code == 1 and "cannot read the passphrase file" in unreadable.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (("regtest-fund", "--data-dir", "{d}", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "1000"), "is not a regtest address"),
        (("regtest-fund", "--data-dir", "{d}", "bcrt1qnotanaddress", "1000"), "is not a regtest address"),
        (("regtest-fund", "--data-dir", "{d}", "{a}", "0"), "SATS must be between 1 and"),
        (("regtest-fund", "--data-dir", "{d}", "{a}", "100"), "below the dust limit"),
        (("regtest-fund", "--data-dir", "{d}", "--fee-rate", "10", "{a}", "1000"), "--fee-rate must be at least 1000"),
        (("regtest-mine", "--data-dir", "{d}", "-1"), "N must not be negative"),
        (("regtest-mine", "2"), "--chain embedded needs --data-dir"),
        (("wallet", "balance"), "needs --data-dir"),
        (("regtest-mine", "--chain", "bitcoin://x", "1"), "--chain must be 'embedded' or an RPC URL"),
        (("regtest-mine", "--chain", "http://127.0.0.1:1", "1"), "cannot reach http://127.0.0.1:1"),
        (("regtest", "--rpc-user", "u"), "needs --data-dir"),
        (("regtest", "--data-dir", "{d}", "--rpc-user", "u"), "give both --rpc-user and --rpc-password"),
        (("regtest", "--data-dir", "{d}", "--rpc-listen", "nonsense:1"), "bad --rpc-listen"),
        (("pay", "--data-dir", "{d}", "--server", "tcp:127.0.0.1:1", "--value", "100000", "--amount", "1",
          "--settlement-wait", "-1"), "settlement_wait must be >= 0"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(data_dir: str, argv: tuple[str, ...], message: str) -> None:
    address = ok("wallet", "--data-dir", data_dir, "--create", "new-address").stdout.strip()
    result = paychan(*(a.format(d=data_dir, a=address) for a in argv))
    assert result.code == 1
    assert message in result.stderr
    assert result.stderr.startswith("paychan: error: ") and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_errors_with_json_are_json_too(data_dir: str) -> None:
    result = paychan("regtest-mine", "--chain", "http://127.0.0.1:1", "--json", "1")
    assert result.code == 1
    assert "cannot reach" in result.json["error"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert paychan().code == 2
    assert paychan("bogus").code == 2
    assert paychan("regtest-fund", "addr", "notanumber").code == 2
    assert paychan("wallet", "--data-dir", "x", "spend").code == 2
    capsys.readouterr()  # argparse writes its usage to the real stderr


def test_a_data_dir_in_use_says_so(data_dir: str) -> None:
    from twisted.internet.task import Clock

    node = RegtestNode(Path(data_dir) / "chain", Clock())
    try:
        result = paychan("regtest-mine", "--data-dir", data_dir, "1")
        assert result.code == 1
        assert "is in use by process" in result.stderr and "--chain http://127.0.0.1:18443" in result.stderr
    finally:
        node.close()


def test_main_runs_many_times_in_one_process(data_dir: str) -> None:
    for n in range(1, 4):
        assert ok("regtest-mine", "--data-dir", data_dir, "--create", "--json", "1").json["height"] == n
