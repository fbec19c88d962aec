"""
An in-memory wallet, for tests and for embedding where the keys may die with the process.

It behaves exactly like :class:`~twisted_paychan.wallet.sqlite.SqliteWallet` (both are
:class:`~twisted_paychan.wallet.base.BaseWallet` with the same logic); it just persists
nothing, so every Deferred it returns has already fired. It has a seed like a new SqliteWallet
(a fresh one, or ``mnemonic``'s), or none with ``seeded=False``, as a wallet from before seeds.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted_paychan.bitcoin.addresses import REGTEST, Network
from twisted_paychan.wallet.base import BaseWallet
from twisted_paychan.wallet.hd import Seed

__all__ = ["MemoryWallet"]


class MemoryWallet(BaseWallet):
    """IWallet with nothing on disk. ``chain`` is an IChain provider."""

    def __init__(
        self, chain: Any, network: Network = REGTEST, mnemonic: Optional[str] = None, seeded: bool = True
    ) -> None:
        super().__init__(chain, network)
        if mnemonic is not None:
            self._seed = Seed.from_mnemonic(mnemonic, network)
        elif seeded:
            self._seed = Seed.generate(network)
        self._ensure_payout_key()
