"""
Public keys as they arrive on the wire, and the signer for keys we hold (PROTOCOL.md §2.6, §4.1).

A peer's key is raw SEC bytes: 33-byte compressed (``02``/``03``) or 65-byte uncompressed
(``04``). bitcoinj's client checks only that form (``ECKey.isPubKeyCanonical``) and then drops
the connection if the point does not decode, so the channel layer needs to tell the two failures
apart (spec A.2: ``BAD_TRANSACTION`` for a non-canonical form, a drop for a canonical form that
is not a point). Hence two error types under one base. We follow the spec's recommendation and
check both forms on both sides; hybrid keys (``06``/``07``), which libsecp256k1 would happily
parse, are refused as not canonical.

:class:`Signer` is the in-memory :class:`~twisted_paychan.chain.interfaces.ISigner`: RFC 6979
deterministic, low-S signatures from libsecp256k1 (via coincurve, always with ``hasher=None``
because the digest already is the sighash). It never gives its key back, so it is what the
wallet hands to channels; :class:`KeySigner` adds ``secret`` and ``generate`` for code that
stores the key itself (a server's own key, tests).
"""

from __future__ import annotations

import functools

import coincurve
from zope.interface import implementer

from twisted_paychan.chain.interfaces import ISigner

__all__ = [
    "PublicKeyError",
    "NonCanonicalPublicKey",
    "NotACurvePoint",
    "is_canonical_public_key",
    "check_public_key",
    "load_public_key",
    "Signer",
    "KeySigner",
]

COMPRESSED_KEY_SIZE = 33
UNCOMPRESSED_KEY_SIZE = 65


class PublicKeyError(ValueError):
    """The bytes are not a public key we accept."""


class NonCanonicalPublicKey(PublicKeyError):
    """Wrong length or prefix: not 33 bytes starting 02/03 nor 65 bytes starting 04 (hybrid
    06/07 keys land here too)."""


class NotACurvePoint(PublicKeyError):
    """Canonical form, but the bytes do not encode a point on secp256k1."""


def is_canonical_public_key(data: bytes) -> bool:
    """bitcoinj's ``ECKey.isPubKeyCanonical``: the length and prefix rule, nothing more."""
    n = len(data)
    if n == COMPRESSED_KEY_SIZE:
        return data[0] in (0x02, 0x03)
    if n == UNCOMPRESSED_KEY_SIZE:
        return data[0] == 0x04
    return False


@functools.lru_cache(maxsize=4096)
def _parse_point(data: bytes) -> coincurve.PublicKey:
    try:
        return coincurve.PublicKey(data)
    except ValueError as e:
        raise NotACurvePoint(f"public key {data.hex()} is not a point on secp256k1") from e


def load_public_key(data: bytes) -> coincurve.PublicKey:
    """Check ``data`` (:func:`check_public_key`) and return the parsed key, for verifying.

    Parsed keys are cached: a server verifies every payment of a channel with the same key, and
    parsing costs about a fifth of a verification. The returned object is shared; use it to
    verify only (never ``add``/``multiply`` with ``update=True``).
    """
    data = bytes(data)
    if not is_canonical_public_key(data):
        raise NonCanonicalPublicKey(
            f"public key is not 33 bytes 02/03 nor 65 bytes 04 (got {len(data)} bytes"
            f"{', prefix %02x' % data[0] if data else ''})"
        )
    return _parse_point(data)


def check_public_key(data: bytes) -> bytes:
    """Return ``data`` as bytes if it is a canonical SEC key on the curve; raise
    :class:`NonCanonicalPublicKey` or :class:`NotACurvePoint` otherwise."""
    data = bytes(data)
    load_public_key(data)
    return data


@implementer(ISigner)
class Signer:
    """An :class:`ISigner` around a private key held in memory, which it never gives back.

    Signatures are deterministic (RFC 6979, libsecp256k1's default nonce) and low-S, exactly
    what bitcoinj produces, so a recorded bitcoinj signature is reproduced byte for byte from the
    same key and digest. ``compressed=False`` gives the 65-byte public key form, for tests of
    peers that use uncompressed keys; our own keys are always compressed.

    This is what a wallet hands to a channel: it signs and shows its public key, nothing more.
    Code that keeps the key itself uses :class:`KeySigner`, which can also return the secret.
    """

    __slots__ = ("_key", "public_key")

    def __init__(self, secret: bytes, *, compressed: bool = True) -> None:
        secret = bytes(secret)
        if len(secret) != 32:
            raise ValueError(f"a private key is 32 bytes, got {len(secret)}")
        try:
            self._key = coincurve.PrivateKey(secret)
        except ValueError as e:  # zero, or not below the group order
            raise ValueError("private key out of range (must be 1 .. n-1)") from e
        self.public_key: bytes = self._key.public_key.format(compressed=compressed)

    def sign(self, digest: bytes) -> bytes:
        """Low-S DER signature, no sighash byte, over a 32-byte digest."""
        if len(digest) != 32:
            raise ValueError(f"a sighash digest is 32 bytes, got {len(digest)}")
        # hasher=None: the digest is already the sighash; the default would hash it again.
        return bytes(self._key.sign(bytes(digest), hasher=None))

    def __repr__(self) -> str:  # never the secret
        return f"<{type(self).__name__} {self.public_key.hex()}>"


class KeySigner(Signer):
    """A :class:`Signer` whose owner may read the key back (:attr:`secret`) to store it, and
    which can draw a fresh key (:meth:`generate`)."""

    __slots__ = ()

    @classmethod
    def generate(cls, *, compressed: bool = True) -> "KeySigner":
        """A fresh random key (coincurve draws it from ``os.urandom``)."""
        return cls(coincurve.PrivateKey().secret, compressed=compressed)

    @property
    def secret(self) -> bytes:
        """The raw 32-byte private key, for storage (bitcoinj stores server keys raw, §11)."""
        return bytes(self._key.secret)
