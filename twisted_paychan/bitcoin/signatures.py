"""
Making our signatures and judging the peer's (PROTOCOL.md §4.2, §13 item 3).

Every signature that crosses the wire is strict DER plus one sighash byte. We produce them with
an :class:`~twisted_paychan.chain.interfaces.ISigner` (deterministic, low S). For a peer's
signature the channel layer calls :func:`verify_peer_signature`, which runs the receive checks in
the spec's order and raises one typed error per kind of failure:

- :class:`BadSignatureEncoding`: not strict DER, an undefined sighash byte, the empty string,
  or a **high S** (:class:`HighSSignature`, a subclass);
- :class:`WrongSighashType`: well formed, but not the flags this message must carry;
- :class:`SignatureDoesNotVerify`: the signature is not the key's over our digest.

All three are ``BAD_TRANSACTION`` on the wire (spec §7.3 checks 1, 6, 7; A.1, A.2).

High S. bitcoinj accepts a high-S signature from its peer (it only checks the encoding), but it
always produces low S itself. A high-S signature would make the settlement or refund it ends up
in non-standard: Bitcoin Core does not relay it. We **reject** it as a bad encoding rather than
normalising it (``s := n - s``): a stock bitcoinj peer never sends one, so a peer that does is
not bitcoinj, and refusing costs nothing while keeping the signature we store identical to the
one we received. libsecp256k1's verifier, which we use, refuses high S anyway.
"""

from __future__ import annotations

from typing import Collection, Union

from twisted_paychan.bitcoin import der
from twisted_paychan.bitcoin.keys import load_public_key
from twisted_paychan.chain.interfaces import ISigner

__all__ = [
    "PeerSignatureError",
    "BadSignatureEncoding",
    "HighSSignature",
    "WrongSighashType",
    "SignatureDoesNotVerify",
    "sign",
    "parse_peer_signature",
    "check_sighash_type",
    "verify_peer_signature",
]


class PeerSignatureError(Exception):
    """A signature from the peer is not acceptable (``BAD_TRANSACTION``)."""


class BadSignatureEncoding(PeerSignatureError):
    """Not strict DER plus a defined sighash byte (the empty signature included), or high S."""


class HighSSignature(BadSignatureEncoding):
    """Strict DER, but S is in the upper half: valid ECDSA, yet non-standard for relay."""


class WrongSighashType(PeerSignatureError):
    """Well formed, but its sighash byte is not one this message allows."""

    def __init__(self, got: int, allowed: Collection[int]) -> None:
        names = ", ".join(f"{a:#04x}" for a in sorted(allowed))
        super().__init__(f"sighash type {got:#04x}, expected {names}")
        self.got = got
        self.allowed = tuple(sorted(allowed))


class SignatureDoesNotVerify(PeerSignatureError):
    """The signature is not the peer key's signature over the digest we computed."""


def sign(signer: ISigner, digest: bytes, sighash_type: int) -> bytes:
    """Our signature in wire form: the signer's low-S DER signature plus ``sighash_type``."""
    if not 0 <= sighash_type <= 0xFF or sighash_type & 0x7F not in (1, 2, 3):
        raise ValueError(f"undefined sighash type {sighash_type:#x}")
    return bytes(signer.sign(digest)) + bytes((sighash_type,))


def parse_peer_signature(signature: bytes) -> der.TxSignature:
    """Spec §7.3 check 1 (and §5 step 6 check 2): strict DER, a defined sighash byte, and (our
    rule) low S. Raises :class:`BadSignatureEncoding` / :class:`HighSSignature`."""
    try:
        parsed = der.parse_signature(signature)
    except der.SignatureEncodingError as e:
        raise BadSignatureEncoding(str(e) if signature else "empty signature") from e
    if not parsed.is_low_s():
        raise HighSSignature("signature has a high S value (non-standard; bitcoinj never makes one)")
    return parsed


def check_sighash_type(parsed: der.TxSignature, allowed: Union[int, Collection[int]]) -> None:
    """Raise :class:`WrongSighashType` unless the signature's sighash byte is in ``allowed``."""
    allowed_set = (allowed,) if isinstance(allowed, int) else tuple(allowed)
    if parsed.sighash not in allowed_set:
        raise WrongSighashType(parsed.sighash, allowed_set)


def verify_peer_signature(
    signature: bytes,
    public_key: bytes,
    digest: bytes,
    allowed_sighash: Union[int, Collection[int]],
) -> der.TxSignature:
    """The one check for every signature the peer sends.

    ``signature`` is the wire form (DER + sighash byte), ``public_key`` the peer's SEC key (it
    must already have passed :func:`~twisted_paychan.bitcoin.keys.check_public_key`; a bad key
    raises :class:`~twisted_paychan.bitcoin.keys.PublicKeyError`), ``digest`` the sighash we
    computed ourselves for the transaction the peer should have signed, and ``allowed_sighash``
    the sighash byte(s) that message must carry (``0x83``/``0x82`` for payments by ``c``,
    ``0x82`` for the v1 server refund signature).

    Returns the parsed signature. Raises :class:`BadSignatureEncoding` (with
    :class:`HighSSignature`), :class:`WrongSighashType` or :class:`SignatureDoesNotVerify`, in
    that order of checking.
    """
    signature = bytes(signature)
    parsed = parse_peer_signature(signature)
    check_sighash_type(parsed, allowed_sighash)
    key = load_public_key(public_key)
    try:
        ok = key.verify(signature[:-1], digest, hasher=None)
    except ValueError as e:  # only for a digest that is not 32 bytes: our bug, not the peer's
        raise ValueError(f"cannot verify: {e}") from e
    if not ok:
        raise SignatureDoesNotVerify("signature does not verify with the peer's key")
    return parsed
