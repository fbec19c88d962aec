"""IWallet conformance: the suite in ``wallet_conformance`` against MemoryWallet and SqliteWallet."""

from __future__ import annotations

from typing import Iterator

import pytest
from twisted.internet.task import Clock

from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.chain.types import Utxo
from twisted_paychan.channel.errors import RemoteProtocolError
from twisted_paychan.signer.protocol import Refused
from twisted_paychan.wallet import MemoryWallet, SqliteWallet
from twisted_paychan.wallet.crypto import ScryptParams
from wallet_conformance import Harness, WalletConformance, failure_of, result

#: Cheap scrypt for tests; the cost is stored in the file, so this is honest encryption.
TEST_SCRYPT = ScryptParams(n=2**10, r=8, p=1)


def _clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


class TestMemoryWallet(WalletConformance):
    @pytest.fixture
    def harness(self) -> Harness:
        clock = _clock()
        chain = MemoryChain(clock)
        return Harness(clock, chain, MemoryWallet(chain), lambda: MemoryWallet(chain))


class TestSeedlessMemoryWallet(WalletConformance):
    """A wallet from before seeds (random keys) behaves the same."""

    @pytest.fixture
    def harness(self) -> Harness:
        clock = _clock()
        chain = MemoryChain(clock)
        return Harness(clock, chain, MemoryWallet(chain, seeded=False), lambda: MemoryWallet(chain, seeded=False))


class TestSqliteWallet(WalletConformance):
    @pytest.fixture
    def harness(self, tmp_path) -> Iterator[Harness]:
        clock = _clock()
        chain = MemoryChain(clock)
        opened: list[SqliteWallet] = []

        def open_wallet(name: str) -> SqliteWallet:
            wallet = SqliteWallet.open(tmp_path / name, chain)
            opened.append(wallet)
            return wallet

        yield Harness(clock, chain, open_wallet("wallet.sqlite"), lambda: open_wallet(f"other{len(opened)}.sqlite"))
        for wallet in opened:
            wallet.close()


class TestEncryptedSqliteWallet(TestSqliteWallet):
    """The same behaviour with every private key sealed under a passphrase."""

    @pytest.fixture
    def harness(self, tmp_path) -> Iterator[Harness]:
        clock = _clock()
        chain = MemoryChain(clock)
        wallet = SqliteWallet.open(tmp_path / "wallet.sqlite", chain, passphrase="correct horse", scrypt=TEST_SCRYPT)
        other = MemoryWallet(chain)
        yield Harness(clock, chain, wallet, lambda: other)
        wallet.close()


class TestBackendsThroughTheirMakers(WalletConformance):
    """Every backend ``twistd paychan --wallet`` ships, opened as the server opens it: through
    its plugin's maker (sqlite in a data directory, memory), found by the plugin scan."""

    @pytest.fixture(params=["sqlite", "memory"])
    def harness(self, request, tmp_path) -> Iterator[Harness]:
        from twisted_paychan.bitcoin.addresses import REGTEST
        from twisted_paychan.wallet.backends import IServedWallet, installed_makers, open_wallet

        maker = installed_makers()[request.param]
        clock = _clock()
        chain = MemoryChain(clock)
        opened = []

        def open_one() -> IServedWallet:
            data_dir = tmp_path / f"data{len(opened)}"
            data_dir.mkdir(mode=0o700)
            wallet = open_wallet((maker, None), str(data_dir), chain, REGTEST, None, clock)
            opened.append(wallet)
            return wallet

        yield Harness(clock, chain, open_one(), open_one)
        for wallet in opened:
            wallet.close()


def test_the_sqlite_maker_opens_an_encrypted_wallet_with_the_passphrase_file(tmp_path) -> None:
    """As ``--wallet-passphrase-file`` does: created encrypted, unlocked by the same file after,
    refused without it, in one line."""
    from twisted_paychan.bitcoin.addresses import REGTEST
    from twisted_paychan.wallet.backends import SqliteBackendMaker, WalletUnusable

    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    passphrase.chmod(0o600)
    chain = MemoryChain(_clock())
    maker = SqliteBackendMaker()
    wallet = maker.open(None, str(tmp_path), chain, REGTEST, str(passphrase), None)
    assert isinstance(wallet, SqliteWallet) and wallet.is_encrypted and wallet.created
    wallet.close()
    again = maker.open(None, str(tmp_path), chain, REGTEST, str(passphrase), None)
    assert isinstance(again, SqliteWallet) and not again.created
    again.close()
    with pytest.raises(WalletUnusable, match="is encrypted: give its passphrase with --wallet-passphrase-file"):
        maker.open(None, str(tmp_path), chain, REGTEST, None, None)


class TestAThirdPartysBackend(WalletConformance):
    """The test plugin ``keylog:PATH`` (``keylog_plugin/``), opened through its maker as a third
    party's backend would be: what doc/wallet.md asks of one."""

    @pytest.fixture
    def harness(self, tmp_path) -> Iterator[Harness]:
        import importlib.util
        from pathlib import Path

        from twisted_paychan.bitcoin.addresses import REGTEST
        from twisted_paychan.wallet.backends import open_wallet

        source = Path(__file__).parent / "keylog_plugin" / "keylog_wallet.py"
        spec = importlib.util.spec_from_file_location("keylog_wallet", source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        maker = module.KeylogBackendMaker()
        clock = _clock()
        chain = MemoryChain(clock)
        opened = []

        def open_one():
            keylog = str(tmp_path / f"keys{len(opened)}.log")
            maker.check(keylog)
            wallet = open_wallet((maker, keylog), str(tmp_path), chain, REGTEST, None, clock)
            opened.append(wallet)
            return wallet

        yield Harness(clock, chain, open_one(), open_one)
        assert (tmp_path / "keys0.log").read_text().count("\n") == len(opened[0].public_keys())
        for wallet in opened:
            wallet.close()


class TestSignerWallet(WalletConformance):
    """The ``signer:`` backend (``wallet.remote``) talking AMP to a real signer in the test
    process (its keys in an encrypted SQLite wallet) over an in-memory connection: the coins, the
    fundings, the reservations and the payout scripts behave as in every wallet. What a signer
    refuses by design (a client's channel key; a signature on an arbitrary digest) is checked as
    a refusal in the tests overridden below."""

    @pytest.fixture
    def harness(self, tmp_path) -> Iterator[Harness]:
        import wallet_conformance
        from signer_setup import signer_wallet, signing_service

        clock = _clock()
        chain = MemoryChain(clock)
        services, endpoints = [], []

        def open_one():
            directory = tmp_path / f"signer{len(services)}"
            directory.mkdir()
            service = signing_service(directory, daily_limit=10**15, clock=clock)
            wallet, endpoint = signer_wallet(service, chain, clock)
            services.append((service, wallet))
            endpoints.append(endpoint)
            return wallet

        def pump_all() -> None:
            for endpoint in endpoints:
                endpoint.pump()

        wallet_conformance.PUMPS.append(pump_all)
        try:
            yield Harness(clock, chain, open_one(), open_one)
        finally:
            wallet_conformance.PUMPS.remove(pump_all)
            for service, wallet in services:
                wallet.close()
                service.wallet.close()
                service.ledger.close()

    def credit(self, h: Harness, value: int, script_type: str = "p2wpkh") -> Utxo:
        # The signer makes P2WPKH addresses only (a P2PKH signature does not commit to the
        # value the server states): the suite's P2PKH coins are P2WPKH ones here.
        return super().credit(h, value, "p2wpkh")

    def test_new_channel_key_signs(self, harness: Harness) -> None:
        """A client's channel key signs every payment: the signer holds a server's keys only."""
        f = failure_of(harness.wallet.new_channel_key())
        assert f.check(Refused) and "holds a server's keys only" in f.getErrorMessage()

    test_client_channel_key_payouts_are_coins = test_new_channel_key_signs

    def test_signer_refuses_non_digest(self, harness: Harness) -> None:
        """No digest is signed on request, of any length: the signer signs settlements and
        refunds it has checked itself."""
        signer = result(harness.wallet.provisional_channel_key())
        for digest in (b"not 32 bytes", bytes(range(32))):
            with pytest.raises(RemoteProtocolError, match="signs settlements and refunds, not digests"):
                signer.sign(digest)

    def test_provisional_channel_key_is_kept_or_forgotten(self, harness: Harness) -> None:
        """As in the suite, with the signer's key: lent, then kept by the channel that names it
        or forgotten; the signer stored it when it handed it out (a forgotten one is unused)."""
        w = harness.wallet
        held = list(w.public_keys())
        lent = result(w.provisional_channel_key())
        assert len(lent.public_key) == 33 and w.public_keys() == held
        with pytest.raises(KeyError):
            w.signer_for(lent.public_key)  # not the wallet's until kept
        w.forget_channel_key(lent.public_key)
        assert w.public_keys() == held and w.provisional_count() == 0
        with pytest.raises(KeyError):
            w.keep_channel_key(lent.public_key)
        kept = result(w.provisional_channel_key())
        w.keep_channel_key(kept.public_key)
        w.keep_channel_key(kept.public_key)
        w.forget_channel_key(kept.public_key)
        assert w.public_keys() == held + [kept.public_key]
        assert w.signer_for(kept.public_key).public_key == kept.public_key
        assert w.provisional_count() == 0

    def test_track_channel_key(self, harness: Harness) -> None:
        signer = result(harness.wallet.provisional_channel_key())
        harness.wallet.keep_channel_key(signer.public_key)
        with pytest.raises(KeyError):
            harness.wallet.track_channel_key(signer.public_key)  # a server's key is paid nothing

    def test_new_addresses(self, harness: Harness) -> None:
        """As in the suite, but a P2PKH address is refused (see ``credit``)."""
        from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script

        w = harness.wallet
        a, b = result(w.new_address()), result(w.new_address())
        assert a != b
        assert a.startswith("bcrt1q") and len(address_to_script(a, REGTEST)) == 22
        assert w.is_mine(address_to_script(a, REGTEST))
        f = failure_of(w.new_address("p2pkh"))
        assert f.check(Refused) and "P2WPKH addresses only" in f.getErrorMessage()
