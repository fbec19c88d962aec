"""
An in-memory wallet, for tests and for embedding where the keys may die with the process.

It behaves exactly like :class:`~twisted_paychan.wallet.sqlite.SqliteWallet` (both are
:class:`~twisted_paychan.wallet.base.BaseWallet` with the same logic); it just persists
nothing, so every Deferred it returns has already fired.
"""

from __future__ import annotations

from typing import Any

from twisted_paychan.bitcoin.addresses import REGTEST, Network
from twisted_paychan.wallet.base import BaseWallet

__all__ = ["MemoryWallet"]


class MemoryWallet(BaseWallet):
    """IWallet with nothing on disk. ``chain`` is an IChain provider."""

    def __init__(self, chain: Any, network: Network = REGTEST) -> None:
        super().__init__(chain, network)
        self._ensure_payout_key()
