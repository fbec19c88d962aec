"""Public key acceptance (spec §2.6, A.2) and the in-memory signer (§4.1, §4.2)."""

from __future__ import annotations

import coincurve
import pytest
from zope.interface.verify import verifyObject

from twisted_paychan.bitcoin.der import SECP256K1_ORDER, parse_signature
from twisted_paychan.bitcoin.keys import (
    KeySigner,
    NonCanonicalPublicKey,
    NotACurvePoint,
    PublicKeyError,
    Signer,
    check_public_key,
    is_canonical_public_key,
    load_public_key,
)
from twisted_paychan.chain.interfaces import ISigner

G_X = bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
G_Y = bytes.fromhex("483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8")
G_COMPRESSED = b"\x02" + G_X  # G's y is even
G_UNCOMPRESSED = b"\x04" + G_X + G_Y
FIELD_P = 2**256 - 2**32 - 977


def test_compressed_and_uncompressed_keys_are_accepted() -> None:
    assert check_public_key(G_COMPRESSED) == G_COMPRESSED
    assert check_public_key(G_UNCOMPRESSED) == G_UNCOMPRESSED
    assert check_public_key(bytearray(G_COMPRESSED)) == G_COMPRESSED  # type: ignore[arg-type]
    assert load_public_key(G_UNCOMPRESSED).format() == G_COMPRESSED


@pytest.mark.parametrize("prefix", [0x06, 0x07])
def test_hybrid_keys_are_not_canonical(prefix: int) -> None:
    hybrid = bytes((prefix,)) + G_X + G_Y
    if prefix == 0x06:  # G's y is even, so 06 is the "correct" hybrid form
        coincurve.PublicKey(hybrid)  # libsecp256k1 itself would accept it: that is why we check
    assert not is_canonical_public_key(hybrid)
    with pytest.raises(NonCanonicalPublicKey):
        check_public_key(hybrid)


@pytest.mark.parametrize(
    "data",
    [b"", G_COMPRESSED[:32], G_COMPRESSED + b"\x00", G_UNCOMPRESSED[:64], G_UNCOMPRESSED + b"\x00",
     b"\x05" + G_X, b"\x00" + G_X, b"\x04" + G_X, b"\x02" + G_X + G_Y],
)
def test_wrong_length_or_prefix_is_not_canonical(data: bytes) -> None:
    with pytest.raises(NonCanonicalPublicKey):
        check_public_key(data)


def _x_not_on_curve() -> bytes:
    x = 1
    while True:
        rhs = (x**3 + 7) % FIELD_P
        if pow(rhs, (FIELD_P - 1) // 2, FIELD_P) != 1:  # not a square: no y for this x
            return x.to_bytes(32, "big")
        x += 1


@pytest.mark.parametrize(
    "data",
    [
        b"\x02" + _x_not_on_curve(),
        b"\x03" + FIELD_P.to_bytes(32, "big"),  # x >= p
        b"\x04" + G_X + (int.from_bytes(G_Y, "big") + 1).to_bytes(32, "big"),  # wrong y
        b"\x02" + b"\x00" * 32,
    ],
)
def test_canonical_form_off_the_curve_is_not_a_point(data: bytes) -> None:
    assert is_canonical_public_key(data)
    with pytest.raises(NotACurvePoint):
        check_public_key(data)


def test_both_key_errors_share_a_base() -> None:
    assert issubclass(NonCanonicalPublicKey, PublicKeyError)
    assert issubclass(NotACurvePoint, PublicKeyError)
    assert not issubclass(NonCanonicalPublicKey, NotACurvePoint)


def test_signer_from_raw_secret() -> None:
    one = KeySigner((1).to_bytes(32, "big"))
    assert one.public_key == G_COMPRESSED
    assert KeySigner((1).to_bytes(32, "big"), compressed=False).public_key == G_UNCOMPRESSED
    assert one.secret == (1).to_bytes(32, "big")
    assert verifyObject(ISigner, one)


@pytest.mark.parametrize("secret", [b"\x00" * 32, SECP256K1_ORDER.to_bytes(32, "big"), b"\x01" * 31, b"\x01" * 33])
def test_signer_rejects_bad_secrets(secret: bytes) -> None:
    with pytest.raises(ValueError):
        KeySigner(secret)


def test_signatures_are_deterministic_low_s_and_verify() -> None:
    signer = KeySigner(b"\x42" * 32)
    for i in range(50):
        digest = bytes([i]) * 32
        sig = signer.sign(digest)
        assert sig == signer.sign(digest)
        parsed = parse_signature(sig + b"\x01")
        assert parsed.is_low_s()
        assert coincurve.PublicKey(signer.public_key).verify(sig, digest, hasher=None)


def test_signer_refuses_a_digest_that_is_not_32_bytes() -> None:
    with pytest.raises(ValueError):
        KeySigner(b"\x42" * 32).sign(b"\x00" * 31)


def test_generated_keys_are_fresh() -> None:
    a, b = KeySigner.generate(), KeySigner.generate()
    assert a.public_key != b.public_key
    assert KeySigner(a.secret).public_key == a.public_key


def test_signer_signs_like_key_signer_but_never_gives_its_key_back() -> None:
    # What a wallet hands to a channel: the same signatures, no way to read the secret.
    secret = b"\x42" * 32
    sealed, owned = Signer(secret), KeySigner(secret)
    assert verifyObject(ISigner, sealed)
    assert sealed.public_key == owned.public_key
    assert sealed.sign(b"\x07" * 32) == owned.sign(b"\x07" * 32)
    assert not hasattr(sealed, "secret")
    assert not hasattr(sealed, "__dict__")  # __slots__: nothing can be attached either
    assert secret.hex() not in repr(sealed) and secret.hex() not in repr(owned)
