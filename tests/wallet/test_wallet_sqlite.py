"""SqliteWallet only: reopening, crash safety of reservations, encryption at rest, the file lock."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.wallet import (
    MAINNET,
    AlreadyEncrypted,
    PassphraseRequired,
    SqliteWallet,
    WalletCorrupt,
    WalletError,
    WalletInUse,
    WalletMismatch,
    WrongPassphrase,
)
from twisted_paychan.wallet.crypto import ScryptParams
from twisted_paychan.wallet.keys import KeyPurpose
from wallet_conformance import TARGET, result

CHEAP = ScryptParams(n=2**10, r=8, p=1)
REPO = Path(__file__).resolve().parents[2]


def _chain() -> MemoryChain:
    clock = Clock()
    clock.advance(1_700_000_000)
    return MemoryChain(clock)


def _file_bytes(path: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


def _secrets(wallet: SqliteWallet) -> list[bytes]:
    return [k.secret for k in wallet._keys.values()]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "wallet.sqlite"


def test_durability_settings(path: Path) -> None:
    wallet = SqliteWallet.open(path, _chain())
    try:
        assert wallet._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert wallet._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        wallet.close()


def test_files_are_private(path: Path) -> None:
    wallet = SqliteWallet.open(path, _chain())
    try:
        result(wallet.new_channel_key())
        for suffix in ("", "-wal", "-shm", ".lock"):
            assert Path(str(path) + suffix).stat().st_mode & 0o077 == 0, suffix
    finally:
        wallet.close()


def test_reopen_keeps_keys_coins_and_reservations(path: Path) -> None:
    chain = _chain()
    wallet = SqliteWallet.open(path, chain)
    channel = result(wallet.new_channel_key())
    address = result(wallet.new_address())
    legacy = result(wallet.new_address("p2pkh"))
    payout = result(wallet.payout_script())
    chain.credit(address_to_script(address, REGTEST), 100_000)
    chain.credit(address_to_script(legacy, REGTEST), 100_000)
    funded = result(wallet.fund(TARGET, 60_000, 1000))
    coins = result(wallet.coins())
    keys = wallet.public_keys()
    digest = b"\x42" * 32
    signature = channel.sign(digest)
    wallet.close()

    wallet = SqliteWallet.open(path, chain)
    try:
        assert wallet.public_keys() == keys
        assert wallet.public_keys(KeyPurpose.CHANNEL) == [channel.public_key]
        assert wallet.signer_for(channel.public_key).sign(digest) == signature
        assert result(wallet.payout_script()) == payout
        assert wallet.is_mine(address_to_script(legacy, REGTEST))
        assert wallet.reserved_transactions() == [funded]
        assert result(wallet.coins()) == coins
        # The reserved coin stays reserved: the next fund takes the other one.
        second = result(wallet.fund(TARGET, 60_000, 1000))
        assert not set(second.spent) & set(funded.spent)
    finally:
        wallet.close()


CRASH_AFTER_FUND = textwrap.dedent(
    """
    import os, sys
    from twisted.internet.task import Clock
    from twisted_paychan.chain.memory import MemoryChain
    from twisted_paychan.wallet import SqliteWallet
    from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script, hash160, p2sh_script

    clock = Clock(); clock.advance(1_700_000_000)
    chain = MemoryChain(clock)
    wallet = SqliteWallet.open(sys.argv[1], chain)
    for address in sys.argv[2:]:
        chain.credit(address_to_script(address, REGTEST), 100_000)
    target = p2sh_script(hash160(b"a channel's redeem script"))
    out = []
    wallet.fund(target, 60_000, 1000).addBoth(out.append)
    print(out[0].txid.hex(), flush=True)
    os._exit(0)  # no close, no clean-up: as if the power went
    """
)


def test_crash_after_fund_keeps_the_reservation(path: Path) -> None:
    """A process funds a transaction and dies before broadcasting: on restart the coins are
    still reserved and the funded transaction is there to broadcast or release."""
    chain = _chain()
    wallet = SqliteWallet.open(path, chain)
    addresses = [result(wallet.new_address()), result(wallet.new_address())]
    wallet.close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_FUND, str(path), *addresses],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    txid = bytes.fromhex(out.stdout.strip())

    # The same coins, from the same deterministic credits, on a chain in this process.
    for address in addresses:
        chain.credit(address_to_script(address, REGTEST), 100_000)
    wallet = SqliteWallet.open(path, chain)
    try:
        (pending,) = wallet.reserved_transactions()
        assert pending.txid == txid
        assert result(wallet.balance()).confirmed == 100_000
        other = result(wallet.fund(TARGET, 60_000, 1000))
        assert not set(other.spent) & set(pending.spent)
        assert result(chain.broadcast(pending.tx)) == txid
    finally:
        wallet.close()


# -- encryption ------------------------------------------------------------------------------


def test_encrypt_an_existing_wallet(path: Path) -> None:
    chain = _chain()
    wallet = SqliteWallet.open(path, chain)
    signer = result(wallet.new_channel_key())
    result(wallet.new_address())
    secrets = _secrets(wallet)
    assert all(s in _file_bytes(path) for s in secrets)  # the test can see plaintext keys
    assert not wallet.is_encrypted
    wallet.encrypt("correct horse", CHEAP)
    assert wallet.is_encrypted
    later = result(wallet.new_channel_key())  # sealed as it is stored
    secrets = _secrets(wallet)
    wallet.close()

    raw = _file_bytes(path)
    assert not any(s in raw for s in secrets), "a private key is still in the file in the clear"

    with pytest.raises(PassphraseRequired):
        SqliteWallet.open(path, chain)
    with pytest.raises(WrongPassphrase):
        SqliteWallet.open(path, chain, passphrase="wrong horse")
    wallet = SqliteWallet.open(path, chain, passphrase="correct horse")
    try:
        digest = b"\x07" * 32
        assert wallet.signer_for(signer.public_key).sign(digest) == signer.sign(digest)
        assert wallet.signer_for(later.public_key).sign(digest) == later.sign(digest)
        with pytest.raises(AlreadyEncrypted):
            wallet.encrypt("again", CHEAP)
    finally:
        wallet.close()


def test_create_encrypted(path: Path) -> None:
    chain = _chain()
    wallet = SqliteWallet.open(path, chain, passphrase="pass", scrypt=CHEAP)
    assert wallet.is_encrypted
    key = result(wallet.new_channel_key())
    secrets = _secrets(wallet)
    wallet.close()
    assert not any(s in _file_bytes(path) for s in secrets)
    wallet = SqliteWallet.open(path, chain, passphrase="pass")
    try:
        assert wallet.signer_for(key.public_key).public_key == key.public_key
    finally:
        wallet.close()


def test_passphrase_for_an_unencrypted_wallet_is_refused(path: Path) -> None:
    SqliteWallet.open(path, _chain()).close()
    with pytest.raises(WalletError, match="not encrypted"):
        SqliteWallet.open(path, _chain(), passphrase="pass")
    SqliteWallet.open(path, _chain()).close()  # the failed open left the file usable


def test_tampered_key_is_detected(path: Path) -> None:
    wallet = SqliteWallet.open(path, _chain(), passphrase="pass", scrypt=CHEAP)
    result(wallet.new_channel_key())
    wallet.close()
    db = sqlite3.connect(path)
    a, b = db.execute("SELECT public_key, secret FROM keys ORDER BY id LIMIT 2").fetchall()
    # Swap two sealed secrets: each is bound to its own public key.
    db.execute("UPDATE keys SET secret = ? WHERE public_key = ?", (b[1], a[0]))
    db.commit()
    db.close()
    with pytest.raises(WalletCorrupt):
        SqliteWallet.open(path, _chain(), passphrase="pass")


# -- opening ----------------------------------------------------------------------------------


def test_second_open_is_refused_until_close(path: Path) -> None:
    wallet = SqliteWallet.open(path, _chain())
    with pytest.raises(WalletInUse, match="already open"):
        SqliteWallet.open(path, _chain())
    wallet.close()
    wallet.close()  # idempotent
    SqliteWallet.open(path, _chain()).close()


def test_another_process_is_refused(path: Path) -> None:
    wallet = SqliteWallet.open(path, _chain())
    try:
        script = textwrap.dedent(
            """
            import sys
            from twisted_paychan.wallet import SqliteWallet, WalletInUse
            try:
                SqliteWallet.open(sys.argv[1], None)
            except WalletInUse as e:
                print("refused:", e)
            """
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        out = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )
        assert out.stdout.startswith("refused:"), out.stdout + out.stderr
    finally:
        wallet.close()


def test_wrong_network_is_refused(path: Path) -> None:
    SqliteWallet.open(path, _chain()).close()
    with pytest.raises(WalletMismatch, match="regtest"):
        SqliteWallet.open(path, _chain(), MAINNET)


def test_newer_schema_is_refused(path: Path) -> None:
    SqliteWallet.open(path, _chain()).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(WalletCorrupt, match="schema version 99"):
        SqliteWallet.open(path, _chain())
    with pytest.raises(WalletCorrupt):  # not WalletInUse: the failed open released the lock
        SqliteWallet.open(path, _chain())


def test_not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not a wallet, just some text that is long enough to be a header" * 20)
    with pytest.raises(WalletCorrupt, match="not a wallet"):
        SqliteWallet.open(path, _chain())


def test_provisional_keys_touch_the_file_only_when_kept(path: Path) -> None:
    """Issue #14 item 2: lending and forgetting keys writes nothing; a kept key is on disk and
    survives a reopen, one lent but neither kept nor forgotten does not."""
    chain = _chain()
    wallet = SqliteWallet.open(path, chain)
    result(wallet.payout_script())
    before = _file_bytes(path)
    for _ in range(200):
        lent = result(wallet.provisional_channel_key())
        wallet.forget_channel_key(lent.public_key)
    dangling = result(wallet.provisional_channel_key())
    assert _file_bytes(path) == before
    kept = result(wallet.provisional_channel_key())
    wallet.keep_channel_key(kept.public_key)
    assert _file_bytes(path) != before
    wallet.close()

    wallet = SqliteWallet.open(path, chain)
    try:
        assert wallet.public_keys(KeyPurpose.CHANNEL) == [kept.public_key]
        assert dangling.public_key not in wallet.public_keys()
        assert wallet.provisional_count() == 0
    finally:
        wallet.close()


def test_reclaim_spends_a_contracts_inputs_back_and_survives_a_reopen(path: Path) -> None:
    """A contract whose opening failed, never broadcast: its coins go back to the payout
    script, paying more than the contract's fee plus relay (a late contract cannot replace it),
    reserved for the reclaim from then on, across a reopen."""
    from bitcoin.core import CTransaction

    from twisted_paychan.wallet.reclaim import ReclaimImpossible

    chain = _chain()
    wallet = SqliteWallet.open(path, chain)
    address = result(wallet.new_address())
    chain.credit(address_to_script(address, REGTEST), 100_000)
    contract = result(wallet.fund(TARGET, 60_000, 1000))
    reclaim = result(wallet.reclaim(contract.txid, 1000))
    assert set(reclaim.spent) == set(contract.spent)
    tx = CTransaction.deserialize(reclaim.tx)
    assert [bytes(o.scriptPubKey) for o in tx.vout] == [result(wallet.payout_script())]
    assert reclaim.fee > contract.fee + len(reclaim.tx) // 4
    assert tx.vout[0].nValue == 100_000 - reclaim.fee
    assert wallet.reserved_transactions() == [reclaim]
    wallet.close()
    wallet = SqliteWallet.open(path, chain)
    try:
        assert wallet.reserved_transactions() == [reclaim]
        assert result(chain.broadcast(reclaim.tx)) == reclaim.txid
        with pytest.raises(ReclaimImpossible):
            result(wallet.reclaim(contract.txid, 1000))  # its inputs are spent now
    finally:
        wallet.close()
