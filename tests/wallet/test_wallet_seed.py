"""Keys from one seed: BIP39/BIP32 derivation, the seed at rest (plain and sealed), wallets from
before seeds, and restoring from the words on a MemoryChain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import coincurve
import pytest
from twisted.internet.task import Clock

from twisted_paychan.bitcoin.addresses import MAINNET, REGTEST, address_to_script, hash160, p2pkh_script, p2wpkh_script
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.wallet import MemoryWallet, SqliteWallet
from twisted_paychan.wallet.crypto import ScryptParams
from twisted_paychan.wallet.encrypt_file import encrypt_wallet_file
from twisted_paychan.wallet.errors import NoSeed
from twisted_paychan.wallet.hd import Branch, InvalidMnemonic, Seed
from twisted_paychan.wallet.keys import KeyPurpose
from twisted_paychan.wallet.restore import ChannelKey, find_coins
from twisted_paychan.wallet.sqlite import SCHEMA_VERSION
from wallet_conformance import result

CHEAP = ScryptParams(n=2**10, r=8, p=1)
#: BIP39's all-zero test mnemonic; BIP84 gives its first receive address (a published vector).
ABANDON = "abandon " * 11 + "about"


def _chain() -> MemoryChain:
    clock = Clock()
    clock.advance(1_700_000_000)
    return MemoryChain(clock)


def test_bip84_vector() -> None:
    seed = Seed.from_mnemonic(ABANDON, MAINNET)
    wallet = MemoryWallet(_chain(), MAINNET, mnemonic=ABANDON)
    assert result(wallet.new_address()) == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert wallet.mnemonic() == ABANDON.strip()
    assert Branch.PAYOUT.path(MAINNET, 3) == "m/84h/0h/0h/1/3"
    assert Branch.RECEIVE.path(REGTEST, 0) == "m/84h/1h/0h/0/0"
    assert len(seed.secret(Branch.CHANNEL, 0)) == 32


def test_mnemonic_is_checked() -> None:
    with pytest.raises(InvalidMnemonic):
        Seed.from_mnemonic("abandon " * 12, REGTEST)  # bad checksum
    with pytest.raises(InvalidMnemonic):
        Seed.from_mnemonic("not words at all", REGTEST)
    assert Seed.from_mnemonic("  ABANDON " * 11 + "About\n", REGTEST).mnemonic() == ABANDON.strip()
    assert len(Seed.generate(REGTEST).mnemonic().split()) == 24
    assert "abandon" not in repr(Seed.from_mnemonic(ABANDON, REGTEST))


def test_every_key_comes_from_the_seed() -> None:
    """Two wallets with the same words hand out the same keys in the same order: receive,
    legacy receive, payout, channel (client and server), settlement payouts."""
    chain = _chain()
    a, b = MemoryWallet(chain, mnemonic=ABANDON), MemoryWallet(chain, mnemonic=ABANDON)
    for w in (a, b):
        w.keep_channel_key(result(w.provisional_channel_key()).public_key)
    assert result(a.new_address()) == result(b.new_address())
    assert result(a.new_address("p2pkh")) == result(b.new_address("p2pkh"))
    assert result(a.payout_script()) == result(b.payout_script())
    assert result(a.new_channel_key()).public_key == result(b.new_channel_key()).public_key
    assert result(a.settlement_payout_script(b"\x07" * 32)) == result(b.settlement_payout_script(b"\x07" * 32))
    assert a.public_keys() == b.public_keys()
    assert MemoryWallet(chain).public_keys() != a.public_keys()


def test_seed_persists_and_reopens(tmp_path: Path) -> None:
    chain = _chain()
    w = SqliteWallet.open(tmp_path / "w.sqlite", chain)
    assert w.created and w.has_seed
    words = w.mnemonic()
    first = result(w.new_address())
    payout = result(w.settlement_payout_script(b"\x01" * 32))
    w.close()
    again = SqliteWallet.open(tmp_path / "w.sqlite", chain)
    assert not again.created and again.mnemonic() == words
    assert result(again.settlement_payout_script(b"\x01" * 32)) == payout  # remembered per channel
    second = result(again.new_address())
    assert second != first  # the next index, not the first again
    again.close()
    restored = MemoryWallet(chain, mnemonic=words)
    assert [result(restored.new_address()) for _ in range(2)] == [first, second]


def test_seed_sealed_when_encrypted(tmp_path: Path) -> None:
    chain = _chain()
    path = tmp_path / "w.sqlite"
    w = SqliteWallet.open(path, chain, passphrase="correct horse", scrypt=CHEAP)
    words = w.mnemonic()
    entropy = Seed.from_mnemonic(words, REGTEST).entropy
    w.close()
    raw = path.read_bytes() + (path.with_name("w.sqlite-wal").read_bytes() if path.with_name("w.sqlite-wal").exists() else b"")
    assert entropy not in raw and entropy.hex().encode() not in raw
    assert SqliteWallet.open(path, chain, passphrase="correct horse").mnemonic() == words


def test_encrypting_an_existing_wallet_seals_its_seed(tmp_path: Path) -> None:
    chain = _chain()
    path = tmp_path / "w.sqlite"
    w = SqliteWallet.open(path, chain)
    words = w.mnemonic()
    w.close()
    encrypt_wallet_file(path, "correct horse", CHEAP)
    db = sqlite3.connect(path)
    stored = db.execute("SELECT value FROM meta WHERE name = 'seed'").fetchone()[0]
    db.close()
    assert stored != Seed.from_mnemonic(words, REGTEST).entropy.hex()
    w = SqliteWallet.open(path, chain, passphrase="correct horse")
    assert w.mnemonic() == words
    w.close()


#: The schema of files written before seeds (user_version 1).
_V1 = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, public_key BLOB NOT NULL UNIQUE, "
    "purpose TEXT NOT NULL CHECK (purpose IN ('channel', 'receive', 'payout')), "
    "script_type TEXT CHECK (script_type IN ('p2wpkh', 'p2pkh')), secret BLOB NOT NULL)",
    "CREATE TABLE coins (txid BLOB NOT NULL, vout INTEGER NOT NULL, value INTEGER NOT NULL, "
    "script_pubkey BLOB NOT NULL, height INTEGER, coinbase INTEGER NOT NULL, PRIMARY KEY (txid, vout))",
    "CREATE TABLE funded (txid BLOB PRIMARY KEY, tx BLOB NOT NULL, fee INTEGER NOT NULL, change_index INTEGER, "
    "state TEXT NOT NULL CHECK (state IN ('reserved', 'spent', 'released')))",
    "CREATE TABLE reservations (txid BLOB NOT NULL, vout INTEGER NOT NULL, "
    "funded_txid BLOB NOT NULL REFERENCES funded (txid), PRIMARY KEY (txid, vout))",
)


def _v1_wallet(path: Path) -> tuple[bytes, bytes]:
    """A schema-1 file with a random receive key and a random (client) channel key."""
    db = sqlite3.connect(path)
    for statement in _V1:
        db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('network', 'regtest')")
    keys = []
    for purpose, script_type in (("receive", "p2wpkh"), ("channel", None)):
        secret = coincurve.PrivateKey().secret
        public = coincurve.PrivateKey(secret).public_key.format(compressed=True)
        db.execute("INSERT INTO keys (public_key, purpose, script_type, secret) VALUES (?, ?, ?, ?)",
                   (public, purpose, script_type, secret))
        keys.append(public)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    return keys[0], keys[1]


def test_wallet_from_before_seeds_keeps_working(tmp_path: Path) -> None:
    chain = _chain()
    path = tmp_path / "old.sqlite"
    receive, channel = _v1_wallet(path)
    w = SqliteWallet.open(path, chain)
    assert not w.created and not w.has_seed
    with pytest.raises(NoSeed):
        w.mnemonic()
    chain.credit(p2wpkh_script(hash160(receive)), 50_000)
    # Its channel key's change is found once the channel store names it (paychan wallet does).
    assert w.track_channel_key(channel)
    chain.credit(p2pkh_script(hash160(channel)), 70_000)
    chain.mine()
    assert result(w.balance()).confirmed == 120_000
    new = result(w.new_channel_key())
    assert w._keys[new.public_key].path is None  # still random keys: no seed to derive from
    assert result(w.settlement_payout_script(b"\x01" * 32)) == result(w.payout_script())
    w.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # migrated through 2 to the latest
    db.close()
    w = SqliteWallet.open(path, chain)
    assert w.is_mine(p2pkh_script(hash160(channel)))
    w.close()


def test_restore_finds_coins_and_channel_keys() -> None:
    chain = _chain()
    old = MemoryWallet(chain)
    words = old.mnemonic()
    addresses = [result(old.new_address()) for _ in range(30)]
    chain.credit(address_to_script(addresses[3], REGTEST), 10_000)
    chain.credit(address_to_script(addresses[29], REGTEST), 20_000)  # past one window of 20
    chain.credit(address_to_script(result(old.new_address("p2pkh")), REGTEST), 30_000)
    payouts = [result(old.settlement_payout_script(bytes([i]) * 32)) for i in range(5)]
    chain.credit(payouts[4], 40_000)
    client_key = result(old.new_channel_key()).public_key
    for _ in range(50):  # handshakes that never became channels leave holes
        old.forget_channel_key(result(old.provisional_channel_key()).public_key)
    server_key = result(old.provisional_channel_key()).public_key
    old.keep_channel_key(server_key)
    chain.credit(p2pkh_script(hash160(client_key)), 889_000)  # the client's change
    chain.mine()
    assert result(old.balance()).confirmed == 989_000

    new = MemoryWallet(chain, mnemonic=words)
    stranger = bytes.fromhex("02" + "11" * 32)
    report = result(find_coins_d(new, chain, [ChannelKey(client_key, True), ChannelKey(server_key, False),
                                              ChannelKey(stranger, False)]))
    assert result(new.balance()).confirmed == 989_000
    # Receive, legacy and payout coins found by the walk; the channel change by the refresh.
    assert report.coins == 4 and report.value == 100_000
    assert report.keys == {"receive": 30, "receive_legacy": 1, "payout": 6, "channel": 2}
    assert report.missing_channel_keys == [stranger]
    assert new.signer_for(server_key).public_key == server_key
    assert not new.is_mine(p2pkh_script(hash160(server_key)))
    assert result(new.new_address()) == result(old.new_address())  # continues after the last used
    assert new.public_keys(KeyPurpose.RECEIVE)[:30] == old.public_keys(KeyPurpose.RECEIVE)[:30]


def find_coins_d(wallet, chain, keys):  # type: ignore[no-untyped-def]
    from twisted.internet import defer

    return defer.ensureDeferred(find_coins(wallet, chain, keys))


def test_child_derivation_matches_embit() -> None:
    """The last, non-hardened step is ours (for speed): it gives embit's keys."""
    from embit import bip32, bip39

    seed = Seed.from_mnemonic(ABANDON, REGTEST)
    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(ABANDON))
    for branch in Branch:
        for index in (0, 1, 7, 1000, 2**31 - 1):
            expected = root.derive(branch.path(REGTEST, index)).key.secret
            assert seed.secret(branch, index) == bytes(expected)
