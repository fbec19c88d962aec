"""
Errors of the wallet itself (as opposed to ``InsufficientFunds``, which belongs to the IWallet
interface): opening, unlocking and misusing a wallet. All are local errors, raised at once.
"""

from __future__ import annotations

__all__ = [
    "WalletError",
    "NoSeed",
    "WalletInUse",
    "PassphraseRequired",
    "NotEncrypted",
    "WrongPassphrase",
    "AlreadyEncrypted",
    "WalletCorrupt",
    "WalletMismatch",
]


class WalletError(Exception):
    """Base class of the wallet's own errors."""


class WalletInUse(WalletError):
    """Another process (or another open wallet in this one) has the wallet file open."""


class PassphraseRequired(WalletError):
    """The wallet's keys are encrypted and no passphrase was given."""


class WrongPassphrase(WalletError):
    """The passphrase does not unlock this wallet."""


class NotEncrypted(WalletError):
    """A passphrase was given for a wallet that is not encrypted (it would protect nothing)."""


class AlreadyEncrypted(WalletError):
    """``encrypt`` was called on a wallet that already is."""


class WalletCorrupt(WalletError):
    """The wallet file holds something this code did not write (or a newer version did)."""


class WalletMismatch(WalletError):
    """The wallet file belongs to another network than the one asked for."""


class NoSeed(WalletError):
    """The wallet is from before seeds: its keys are random, there are no words to show."""
