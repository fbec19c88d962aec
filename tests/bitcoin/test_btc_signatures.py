"""Our signatures and the one check for the peer's (spec §4.2, §7.3 checks 1/6/7, §13 item 3)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_paychan.bitcoin import der
from twisted_paychan.bitcoin.keys import KeySigner, NonCanonicalPublicKey
from twisted_paychan.bitcoin.signatures import (
    BadSignatureEncoding,
    HighSSignature,
    PeerSignatureError,
    SignatureDoesNotVerify,
    WrongSighashType,
    sign,
    verify_peer_signature,
)

SIGNER = KeySigner(hashlib.sha256(b"peer").digest())
OTHER = KeySigner(hashlib.sha256(b"someone else").digest())
DIGEST = hashlib.sha256(b"a sighash").digest()
SIGHASH_BYTES = [0x01, 0x02, 0x03, 0x81, 0x82, 0x83]


def test_sign_appends_the_sighash_byte() -> None:
    sig = sign(SIGNER, DIGEST, 0x83)
    assert sig[:-1] == SIGNER.sign(DIGEST)
    assert sig[-1] == 0x83
    assert verify_peer_signature(sig, SIGNER.public_key, DIGEST, 0x83).sighash == 0x83


@pytest.mark.parametrize("bad", [0x00, 0x04, 0x84, 0x100, -1])
def test_sign_refuses_undefined_sighash_types(bad: int) -> None:
    with pytest.raises(ValueError):
        sign(SIGNER, DIGEST, bad)


def test_a_collection_of_allowed_sighash_bytes() -> None:
    sig = sign(SIGNER, DIGEST, 0x82)
    verify_peer_signature(sig, SIGNER.public_key, DIGEST, (0x82, 0x83))
    with pytest.raises(WrongSighashType) as info:
        verify_peer_signature(sig, SIGNER.public_key, DIGEST, [0x01, 0x83])
    assert info.value.got == 0x82
    assert info.value.allowed == (0x01, 0x83)


def _padded_r(sig: bytes) -> bytes:
    """The same signature with a superfluous 00 in front of R: not strict DER."""
    len_r = sig[3]
    r = sig[4 : 4 + len_r]
    rest = sig[4 + len_r :]
    body = b"\x02" + bytes([len_r + 1]) + b"\x00" + r + rest[:-1]
    return b"\x30" + bytes([len(body)]) + body + rest[-1:]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: b"",
        lambda s: s[:-1],  # no sighash byte: the DER lengths no longer add up
        lambda s: s[:-1] + b"\x04",  # undefined sighash type
        lambda s: s[:-1] + b"\x00",
        lambda s: s + b"\x01",  # trailing byte
        _padded_r,
        lambda s: b"\x31" + s[1:],
    ],
)
def test_bad_encodings(mangle) -> None:
    sig = sign(SIGNER, DIGEST, 0x01)
    with pytest.raises(BadSignatureEncoding):
        verify_peer_signature(mangle(sig), SIGNER.public_key, DIGEST, 0x01)


def test_high_s_is_rejected_as_a_bad_encoding() -> None:
    sig = sign(SIGNER, DIGEST, 0x83)
    parsed = der.parse_signature(sig)
    flipped = der.TxSignature(parsed.r, der.SECP256K1_ORDER - parsed.s, parsed.sighash)
    with pytest.raises(HighSSignature):
        verify_peer_signature(flipped.to_bytes(), SIGNER.public_key, DIGEST, 0x83)
    assert issubclass(HighSSignature, BadSignatureEncoding)
    # The normalised form is the original signature: high S was a malleated copy.
    assert flipped.normalized().to_bytes() == sig


def test_does_not_verify() -> None:
    sig = sign(SIGNER, DIGEST, 0x01)
    with pytest.raises(SignatureDoesNotVerify):
        verify_peer_signature(sig, OTHER.public_key, DIGEST, 0x01)
    with pytest.raises(SignatureDoesNotVerify):
        verify_peer_signature(sig, SIGNER.public_key, hashlib.sha256(DIGEST).digest(), 0x01)


def test_order_of_checks_encoding_then_flags_then_signature() -> None:
    sig = sign(OTHER, DIGEST, 0x01)  # wrong flags *and* wrong key: flags reported
    with pytest.raises(WrongSighashType):
        verify_peer_signature(sig, SIGNER.public_key, DIGEST, 0x83)
    with pytest.raises(BadSignatureEncoding):  # bad encoding *and* wrong flags: encoding reported
        verify_peer_signature(sig[:-1] + b"\x07", SIGNER.public_key, DIGEST, 0x83)


def test_all_peer_errors_share_one_base() -> None:
    for cls in (BadSignatureEncoding, HighSSignature, WrongSighashType, SignatureDoesNotVerify):
        assert issubclass(cls, PeerSignatureError)


def test_a_bad_peer_key_is_a_key_error() -> None:
    sig = sign(SIGNER, DIGEST, 0x01)
    with pytest.raises(NonCanonicalPublicKey):
        verify_peer_signature(sig, b"\x06" + SIGNER.public_key[1:], DIGEST, 0x01)


_scalars = st.integers(min_value=1, max_value=der.SECP256K1_ORDER - 1)


@given(r=_scalars, s=_scalars, sighash=st.sampled_from(SIGHASH_BYTES))
def test_der_round_trip(r: int, s: int, sighash: int) -> None:
    sig = der.TxSignature(r, s, sighash)
    wire = sig.to_bytes()
    assert 9 <= len(wire) <= 73
    assert der.parse_signature(wire) == sig
    assert der.parse_signature(wire).to_bytes() == wire


@settings(max_examples=60)
@given(digest=st.binary(min_size=32, max_size=32), sighash=st.sampled_from(SIGHASH_BYTES))
def test_our_signatures_parse_and_reserialise_identically(digest: bytes, sighash: int) -> None:
    wire = sign(SIGNER, digest, sighash)
    parsed = verify_peer_signature(wire, SIGNER.public_key, digest, sighash)
    assert parsed.to_bytes() == wire
    assert parsed.is_low_s()
