"""
Keys from one seed: a BIP39 mnemonic, the BIP32 tree it roots, and where in that tree each kind
of key lives.

The wallet keeps the mnemonic's *entropy* (16 to 32 bytes), from which the words and the seed
both follow, so the words can be shown again. The seed is BIP39's (PBKDF2 of the words, with
no BIP39 passphrase: the wallet's own passphrase encrypts the file, it does not change the keys).
BIP39 and the hardened part of each path are embit's (``doc/wallet.md`` says why that library);
the last, non-hardened step is done here (:func:`_child_secret`, BIP32's CKDpriv: one HMAC and
one addition), because a server derives a channel key for every handshake and embit's child
derivation also base58-encodes every key it makes, three times the cost of the rest.

Where keys live, ``c`` being the coin type (0 on mainnet, 1 on every test network):

=================  ===========================  =========================================
branch             path                         what
=================  ===========================  =========================================
``RECEIVE``        ``m/84'/c'/0'/0/i``          P2WPKH receive addresses (BIP84)
``RECEIVE_LEGACY`` ``m/44'/c'/0'/0/i``          P2PKH receive addresses (BIP44)
``PAYOUT``         ``m/84'/c'/0'/1/i``          change, settlement payouts (BIP84 change)
``CHANNEL``        ``m/84'/c'/0'/2/i``          channel keys (a client's change and refund
                                                pay P2PKH of its channel key)
=================  ===========================  =========================================

Receive and change follow BIP84/BIP44, so another wallet given the words finds those coins too.
Channel keys sit on a branch no other wallet scans: their outputs are the channel's until it
closes, and only this wallet (with the channel store) knows what they pay.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import unicodedata
from typing import Final

import coincurve
from embit import bip32, bip39

from twisted_paychan.bitcoin.addresses import MAINNET, Network

__all__ = ["Branch", "Seed", "InvalidMnemonic", "ENTROPY_BYTES"]

#: 32 bytes: 24 words, 256 bits, the most BIP39 allows.
ENTROPY_BYTES: Final = 32
_HARDENED: Final = 0x80000000
#: The order of secp256k1's group.
_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class InvalidMnemonic(ValueError):
    """Words that are not a BIP39 mnemonic (unknown word, wrong count, bad checksum)."""


class Branch(enum.Enum):
    """(purpose, chain) of each branch of the tree; see the module docstring."""

    RECEIVE = (84, 0)
    RECEIVE_LEGACY = (44, 0)
    PAYOUT = (84, 1)
    CHANNEL = (84, 2)

    def path(self, network: Network, index: int) -> str:
        purpose, chain = self.value
        return f"m/{purpose}h/{_coin_type(network)}h/0h/{chain}/{index}"


def _coin_type(network: Network) -> int:
    return 0 if network.name == MAINNET.name else 1


class Seed:
    """A mnemonic's entropy and the branches of its tree. ``repr`` never shows either."""

    def __init__(self, entropy: bytes, network: Network) -> None:
        if len(entropy) not in (16, 20, 24, 28, 32):
            raise InvalidMnemonic(f"BIP39 entropy is 16 to 32 bytes in steps of 4, not {len(entropy)}")
        self.entropy = bytes(entropy)
        self.network = network
        root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(self.mnemonic()))
        # The hardened part of each path once; the children under it are cheap.
        self._branches: dict[Branch, tuple[bytes, bytes, bytes]] = {}
        for branch in Branch:
            node = root.derive(branch.path(network, 0).rsplit("/", 1)[0])
            secret = bytes(node.key.secret)
            self._branches[branch] = (secret, bytes(node.chain_code), _public_key(secret))

    @classmethod
    def generate(cls, network: Network) -> "Seed":
        return cls(secrets.token_bytes(ENTROPY_BYTES), network)

    @classmethod
    def from_mnemonic(cls, words: str, network: Network) -> "Seed":
        """The seed of ``words`` (any spacing and case); :class:`InvalidMnemonic` otherwise."""
        normal = " ".join(unicodedata.normalize("NFKD", words).lower().split())
        try:
            entropy = bip39.mnemonic_to_bytes(normal)
        except (ValueError, KeyError, IndexError) as e:
            raise InvalidMnemonic(f"not a BIP39 mnemonic: {e}") from None
        return cls(entropy, network)

    def mnemonic(self) -> str:
        return str(bip39.mnemonic_from_bytes(self.entropy))

    def secret(self, branch: Branch, index: int) -> bytes:
        """The 32-byte private key at ``index`` (non-hardened) of ``branch``."""
        if not 0 <= index < _HARDENED:
            raise ValueError(f"child index out of range: {index}")
        return _child_secret(*self._branches[branch], index)

    def __repr__(self) -> str:
        return f"<Seed {self.network.name}>"


def _public_key(secret: bytes) -> bytes:
    return bytes(coincurve.PrivateKey(secret).public_key.format(compressed=True))


def _child_secret(secret: bytes, chain_code: bytes, public_key: bytes, index: int) -> bytes:
    """BIP32 CKDpriv for a non-hardened ``index``: HMAC-SHA512 over the parent's public key and
    the index, keyed by its chain code; the child key is the left half plus the parent's key."""
    digest = hmac.new(chain_code, public_key + index.to_bytes(4, "big"), hashlib.sha512).digest()
    tweak = int.from_bytes(digest[:32], "big")
    child = (tweak + int.from_bytes(secret, "big")) % _N
    if tweak >= _N or child == 0:  # probability below 2^-127; BIP32 says use the next index
        raise ValueError(f"BIP32 index {index} gives no valid key; use the next one")
    return child.to_bytes(32, "big")
