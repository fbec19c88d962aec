"""
Encryption of private keys at rest under a passphrase.

The passphrase is stretched with scrypt (salt and cost stored next to the keys, so they can be
raised later without breaking old files) into a 256-bit AES-GCM key. Each private key is sealed
separately with a fresh 96-bit nonce and its own public key as associated data, so a sealed
secret moved onto another key's row fails to open instead of signing with the wrong key.

A *verifier* (a fixed plaintext sealed at encryption time) tells a wrong passphrase from a
damaged file: opening it is the first thing done with a derived key, and failing to means
:class:`WrongPassphrase`, before any key is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from twisted_paychan.wallet.errors import WalletCorrupt, WrongPassphrase

__all__ = ["ScryptParams", "DEFAULT_SCRYPT", "KeyCipher", "VERIFIER_PLAINTEXT"]

_NONCE_LEN: Final = 12
_SALT_LEN: Final = 16
#: What the verifier seals; its associated data says what it is for.
VERIFIER_PLAINTEXT: Final = b"twisted-paychan wallet passphrase check"
_VERIFIER_AAD: Final = b"verifier"


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: N (CPU/memory, a power of two), r (block size), p (parallelism)."""

    n: int
    r: int
    p: int

    def encode(self) -> str:
        return f"scrypt:{self.n}:{self.r}:{self.p}"

    @classmethod
    def decode(cls, text: str) -> "ScryptParams":
        try:
            name, n, r, p = text.split(":")
            if name != "scrypt":
                raise ValueError(name)
            return cls(int(n), int(r), int(p))
        except ValueError as e:
            raise WalletCorrupt(f"unknown key derivation parameters {text!r}") from e


#: About 64 MiB and a fraction of a second on a laptop: paid once per wallet open.
DEFAULT_SCRYPT: Final = ScryptParams(n=2**16, r=8, p=1)


class KeyCipher:
    """Seals and opens private keys with a key derived from a passphrase."""

    def __init__(self, aes_key: bytes) -> None:
        self._aead = AESGCM(aes_key)

    @classmethod
    def derive(cls, passphrase: str, salt: bytes, params: ScryptParams) -> "KeyCipher":
        if not passphrase:
            raise ValueError("the passphrase must not be empty")
        kdf = Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p)
        return cls(kdf.derive(passphrase.encode("utf-8")))

    @staticmethod
    def new_salt() -> bytes:
        return os.urandom(_SALT_LEN)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """nonce || ciphertext-with-tag."""
        nonce = os.urandom(_NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """The plaintext; :class:`WalletCorrupt` if it does not authenticate (the passphrase
        was already checked by :meth:`check_verifier`, so this is damage, not a typo)."""
        try:
            return self._aead.decrypt(sealed[:_NONCE_LEN], sealed[_NONCE_LEN:], associated)
        except InvalidTag:
            raise WalletCorrupt("an encrypted key does not authenticate") from None

    def make_verifier(self) -> bytes:
        return self.seal(VERIFIER_PLAINTEXT, _VERIFIER_AAD)

    def check_verifier(self, verifier: bytes) -> None:
        try:
            plain = self._aead.decrypt(verifier[:_NONCE_LEN], verifier[_NONCE_LEN:], _VERIFIER_AAD)
        except InvalidTag:
            raise WrongPassphrase("wrong passphrase for this wallet") from None
        if plain != VERIFIER_PLAINTEXT:
            raise WalletCorrupt("passphrase verifier has unexpected contents")
