"""The legacy sighash, generic and fast (spec §4.2, §4.8)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcoin_primitives_helpers import CLIENT, E, SERVER, channel
from twisted_paychan.bitcoin import transactions as tx_mod
from twisted_paychan.bitcoin.keys import KeySigner
from twisted_paychan.bitcoin.payment import build_payment
from twisted_paychan.bitcoin.scripts import ChannelScript, p2pkh_script, push_data
from twisted_paychan.bitcoin.sighash import payment_sighash, payment_sighash_type, signature_hash
from twisted_paychan.constants import MAX_MONEY

HASH_ONE = (1).to_bytes(32, "little")


def _dsha(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


def test_payment_preimage_is_the_spec_layout() -> None:
    """§4.8 lists the preimage bytes; build them literally and compare."""
    ch = channel(2)
    txid = bytes(range(32))
    c = 994000
    code = ch.script_code
    preimage_c = (
        bytes.fromhex("01000000") + b"\x01" + txid + bytes.fromhex("00000000") + bytes([len(code)]) + code
        + bytes.fromhex("ffffffff") + b"\x01" + c.to_bytes(8, "little") + b"\x19" + ch.client_change_script
        + bytes.fromhex("00000000") + bytes.fromhex("83000000")
    )
    assert ch.client_change_script[:3] == bytes.fromhex("76a914") and ch.client_change_script[-2:] == bytes.fromhex("88ac")
    assert payment_sighash(txid, code, c, ch.client_change_script) == _dsha(preimage_c)
    preimage_0 = (
        bytes.fromhex("01000000") + b"\x01" + txid + bytes.fromhex("00000000") + bytes([len(code)]) + code
        + bytes.fromhex("ffffffff") + b"\x00" + bytes.fromhex("00000000") + bytes.fromhex("82000000")
    )
    assert payment_sighash(txid, code, 0, ch.client_change_script) == _dsha(preimage_0)


def test_payment_sighash_type() -> None:
    assert payment_sighash_type(1) == 0x83
    assert payment_sighash_type(0) == 0x82


_opcode = st.integers(min_value=0x4F, max_value=0xFF).filter(lambda op: op != 0xAB)  # no CODESEPARATOR
_element = st.one_of(st.binary(max_size=300).map(push_data), _opcode.map(lambda op: bytes((op,))))
#: Well-formed scripts of any length (the varint of its length crosses 0xfd): our script codes
#: always parse, and a script that does not is refused by ``signature_hash``.
_scripts = st.lists(_element, max_size=12).map(b"".join)
_keys = st.binary(min_size=32, max_size=32).filter(lambda b: 0 < int.from_bytes(b, "big") < 2**256 - 2**129)


@settings(max_examples=200)
@given(
    txid=st.binary(min_size=32, max_size=32),
    script_code=_scripts,
    change=st.one_of(st.just(0), st.integers(min_value=1, max_value=MAX_MONEY)),
    secret=_keys,
    compressed=st.booleans(),
)
def test_fast_payment_sighash_equals_the_generic_one(
    txid: bytes, script_code: bytes, change: int, secret: bytes, compressed: bool
) -> None:
    key = KeySigner(secret, compressed=compressed).public_key
    change_script = p2pkh_script(key)
    fast = payment_sighash(txid, script_code, change, change_script)
    outputs = [tx_mod.tx_output(change, change_script)] if change else []
    tx = tx_mod.make_transaction([tx_mod.tx_input(txid, 0, 0xFFFFFFFF)], outputs)
    assert fast == signature_hash(tx, 0, script_code, 0x83 if change else 0x82)
    if change == 0:
        # bitcoinj's client keeps a 0-value output in its copy; NONE leaves it out of the digest.
        with_zero = tx_mod.make_transaction([tx_mod.tx_input(txid, 0, 0xFFFFFFFF)], [tx_mod.tx_output(0, change_script)])
        assert fast == signature_hash(with_zero, 0, script_code, 0x82)


def test_build_payment_matches_the_fast_digest_for_channels() -> None:
    for version in (1, 2):
        ch = channel(version)
        for c in (0, 546, 999000):
            tx = build_payment(ch, b"\x22" * 32, c)
            assert len(tx.vout) == (1 if c else 0)
            assert payment_sighash(b"\x22" * 32, ch.script_code, c, ch.client_change_script) == signature_hash(
                tx, 0, ch.script_code, payment_sighash_type(c)
            )


def test_single_without_matching_output_is_hash_one() -> None:
    tx = tx_mod.make_transaction(
        [tx_mod.tx_input(b"\x01" * 32, 0, 0xFFFFFFFF), tx_mod.tx_input(b"\x02" * 32, 0, 0xFFFFFFFF)],
        [tx_mod.tx_output(1000, b"\x51")],
    )
    assert signature_hash(tx, 1, b"\x51", 0x03) == HASH_ONE
    assert signature_hash(tx, 0, b"\x51", 0x03) != HASH_ONE


def test_bad_arguments() -> None:
    tx = build_payment(channel(1), b"\x22" * 32, 1000)
    with pytest.raises(ValueError):
        signature_hash(tx, 1, b"", 0x01)
    with pytest.raises(ValueError):
        signature_hash(tx, 0, b"", 0x101)
    with pytest.raises(ValueError):
        signature_hash(tx, 0, b"\x4c\x05\x00", 0x01)  # truncated push
    with pytest.raises(ValueError):
        payment_sighash(b"\x22" * 31, b"", 1, b"")
    with pytest.raises(ValueError):
        payment_sighash(b"\x22" * 32, b"", -1, b"")
    with pytest.raises(ValueError):
        payment_sighash(b"\x22" * 32, b"", MAX_MONEY + 1, b"")


def test_uncompressed_client_key_channel() -> None:
    client = KeySigner(CLIENT.secret, compressed=False)
    ch = ChannelScript.v2(client.public_key, SERVER.public_key, E)
    tx = build_payment(ch, b"\x33" * 32, 5000)
    assert len(ch.client_change_script) == 25
    assert payment_sighash(b"\x33" * 32, ch.script_code, 5000, ch.client_change_script) == signature_hash(
        tx, 0, ch.script_code, 0x83
    )
