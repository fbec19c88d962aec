"""IWallet conformance: the suite in ``wallet_conformance`` against MemoryWallet and SqliteWallet."""

from __future__ import annotations

from typing import Iterator

import pytest
from twisted.internet.task import Clock

from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.wallet import MemoryWallet, SqliteWallet
from twisted_paychan.wallet.crypto import ScryptParams
from wallet_conformance import Harness, WalletConformance

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
