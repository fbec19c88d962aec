"""Passphrase sealing of private keys."""

import pytest

from twisted_paychan.wallet.crypto import DEFAULT_SCRYPT, KeyCipher, ScryptParams
from twisted_paychan.wallet.errors import WalletCorrupt, WrongPassphrase

CHEAP = ScryptParams(n=2**10, r=8, p=1)
SALT = bytes(range(16))


def test_seal_and_open():
    cipher = KeyCipher.derive("pass", SALT, CHEAP)
    sealed = cipher.seal(b"\x01" * 32, b"public key")
    assert b"\x01" * 32 not in sealed
    assert len(sealed) == 12 + 32 + 16
    assert KeyCipher.derive("pass", SALT, CHEAP).open(sealed, b"public key") == b"\x01" * 32


def test_nonces_differ():
    cipher = KeyCipher.derive("pass", SALT, CHEAP)
    assert cipher.seal(b"k", b"a") != cipher.seal(b"k", b"a")


def test_sealed_key_is_bound_to_its_public_key():
    cipher = KeyCipher.derive("pass", SALT, CHEAP)
    sealed = cipher.seal(b"\x01" * 32, b"key A")
    with pytest.raises(WalletCorrupt):
        cipher.open(sealed, b"key B")


def test_verifier_tells_a_wrong_passphrase():
    verifier = KeyCipher.derive("right", SALT, CHEAP).make_verifier()
    KeyCipher.derive("right", SALT, CHEAP).check_verifier(verifier)
    with pytest.raises(WrongPassphrase):
        KeyCipher.derive("wrong", SALT, CHEAP).check_verifier(verifier)
    with pytest.raises(WrongPassphrase):
        KeyCipher.derive("right", bytes(16), CHEAP).check_verifier(verifier)  # other salt


def test_empty_passphrase_is_refused():
    with pytest.raises(ValueError):
        KeyCipher.derive("", SALT, CHEAP)


def test_params_round_trip_and_garbage():
    assert ScryptParams.decode(DEFAULT_SCRYPT.encode()) == DEFAULT_SCRYPT
    with pytest.raises(WalletCorrupt):
        ScryptParams.decode("argon2:1:2:3")
    with pytest.raises(WalletCorrupt):
        ScryptParams.decode("scrypt:x")
