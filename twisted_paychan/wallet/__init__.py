"""
The wallet: keys and coins of one party, behind ``chain.interfaces.IWallet``.

* ``hd``         the seed: BIP39 words, the BIP32 tree, where each kind of key lives in it
* ``keys``       keys by purpose (channel, receive, payout) and the ``ISigner`` that wraps them
* ``coinselect`` which coins pay for a transaction (pure)
* ``txbuild``    building and signing funding transactions (pure)
* ``crypto``     passphrase encryption of private keys at rest
* ``base``       the IWallet logic shared by both wallets
* ``memory``     ``MemoryWallet``: the in-memory double
* ``sqlite``     ``SqliteWallet``: the durable one
* ``follow``     following the chain: one scan, then block by block and the mempool (issue #21)
* ``restore``    finding a restored wallet's keys and coins on the chain
* ``send``       ``send_coins``: withdrawing to an address (any front end)
* ``backends``   ``twistd paychan --wallet``: the backend plugin interface, ``sqlite`` and ``memory``

Addresses (``MAINNET``, ``REGTEST``, ``TESTNET``, ``Network``) are ``bitcoin.addresses``, re-exported
here for the wallet's callers.

``doc/wallet.md`` describes what the wallet stores and how channels use its keys.
"""

from twisted_paychan.bitcoin.addresses import MAINNET, REGTEST, TESTNET, Network
from twisted_paychan.wallet.errors import (
    AlreadyEncrypted,
    NoSeed,
    PassphraseRequired,
    WalletCorrupt,
    WalletError,
    WalletInUse,
    WalletMismatch,
    WrongPassphrase,
)
from twisted_paychan.wallet.memory import MemoryWallet
from twisted_paychan.wallet.sqlite import SqliteWallet

__all__ = [
    "MAINNET",
    "TESTNET",
    "REGTEST",
    "Network",
    "MemoryWallet",
    "SqliteWallet",
    "WalletError",
    "NoSeed",
    "WalletInUse",
    "PassphraseRequired",
    "WrongPassphrase",
    "AlreadyEncrypted",
    "WalletCorrupt",
    "WalletMismatch",
]
