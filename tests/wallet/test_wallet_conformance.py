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
