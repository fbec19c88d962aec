"""
Transaction signatures on the wire: strict DER followed by one sighash byte (PROTOCOL.md §4.2).

We parse with Bitcoin Core's ``IsValidSignatureEncoding`` rules (BIP66), which is what bitcoinj's
``TransactionSignature.isEncodingCanonical`` plus its DER decoder amount to, and then check the
sighash byte. S is kept as received; :meth:`TxSignature.is_low_s` and
:meth:`TxSignature.normalized` let callers decide (we reject high S from peers: see
``bitcoin.signatures``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Order of the secp256k1 group.
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_ORDER = SECP256K1_ORDER // 2

_DEFINED_BASE_TYPES = (0x01, 0x02, 0x03)


class SignatureEncodingError(ValueError):
    """The bytes are not strict DER plus a defined sighash byte."""


@dataclass(frozen=True)
class TxSignature:
    """An ECDSA signature with the sighash type it commits to."""

    r: int
    s: int
    sighash: int

    def is_low_s(self) -> bool:
        return 1 <= self.s <= _HALF_ORDER

    def normalized(self) -> "TxSignature":
        """The same signature with S in the lower half (``s := n - s``), still valid."""
        if self.is_low_s():
            return self
        return TxSignature(self.r, SECP256K1_ORDER - self.s, self.sighash)

    def der(self) -> bytes:
        """The DER encoding, without the sighash byte."""
        r = _encode_integer(self.r)
        s = _encode_integer(self.s)
        body = b"\x02" + bytes([len(r)]) + r + b"\x02" + bytes([len(s)]) + s
        return b"\x30" + bytes([len(body)]) + body

    def to_bytes(self) -> bytes:
        """The wire form: DER plus the sighash byte."""
        return self.der() + bytes([self.sighash])


def _encode_integer(value: int) -> bytes:
    if value <= 0:
        raise ValueError("DER integers in signatures are positive")
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return raw


def is_valid_signature_encoding(sig: bytes) -> bool:
    """Bitcoin Core's ``IsValidSignatureEncoding``: strict DER, sighash byte included."""
    n = len(sig)
    if n < 9 or n > 73:
        return False
    if sig[0] != 0x30 or sig[1] != n - 3:
        return False
    len_r = sig[3]
    if 5 + len_r >= n:
        return False
    len_s = sig[5 + len_r]
    if len_r + len_s + 7 != n:
        return False
    if sig[2] != 0x02 or len_r == 0 or sig[4] & 0x80:
        return False
    if len_r > 1 and sig[4] == 0x00 and not sig[5] & 0x80:
        return False
    if sig[len_r + 4] != 0x02 or len_s == 0 or sig[len_r + 6] & 0x80:
        return False
    if len_s > 1 and sig[len_r + 6] == 0x00 and not sig[len_r + 7] & 0x80:
        return False
    return True


def parse_signature(sig: bytes) -> TxSignature:
    """Parse DER + sighash byte; raise :class:`SignatureEncodingError` unless canonical.

    Canonical means strict DER, R and S in [1, n-1], and a sighash type whose base (with
    ANYONECANPAY masked off) is ALL, NONE or SINGLE. The empty signature, which bitcoinj's
    encoding check lets through, is rejected here (the spec's recommendation).
    """
    sig = bytes(sig)
    if not is_valid_signature_encoding(sig):
        raise SignatureEncodingError("signature is not strict DER")
    sighash = sig[-1]
    if sighash & 0x7F not in _DEFINED_BASE_TYPES:
        raise SignatureEncodingError(f"undefined sighash type {sighash:#04x}")
    len_r = sig[3]
    r = int.from_bytes(sig[4 : 4 + len_r], "big")
    s = int.from_bytes(sig[6 + len_r : -1], "big")
    if not (0 < r < SECP256K1_ORDER and 0 < s < SECP256K1_ORDER):
        raise SignatureEncodingError("R or S out of range")
    return TxSignature(r, s, sighash)
