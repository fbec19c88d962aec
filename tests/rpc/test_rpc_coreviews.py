"""Core-shaped views of scripts (asm, type, descriptor) and BIP380 descriptor checksums."""

from __future__ import annotations

import hashlib

import pytest

from twisted_paychan.bitcoin import descriptors
from twisted_paychan.bitcoin.addresses import MAINNET, REGTEST, address_to_script, script_to_address
from twisted_paychan.chain.embedded.rpc import coreviews

KEY = bytes.fromhex("02" + "11" * 32)
KEY2 = bytes.fromhex("03" + "22" * 32)
H20 = bytes(range(20))


def test_bip380_checksum_vector() -> None:
    assert descriptors.checksum("raw(deadbeef)") == "89f8spxm"
    assert descriptors.parse("raw(deadbeef)#89f8spxm", MAINNET) == bytes.fromhex("deadbeef")
    assert descriptors.parse("raw(deadbeef)", MAINNET) == bytes.fromhex("deadbeef")
    # The example in Bitcoin Core's scantxoutset help.
    p2pkh = "76a91411b366edfc0a8b66feebae5c2e25a7b6a5d1cf3188ac"
    assert descriptors.with_checksum(f"raw({p2pkh})") == f"raw({p2pkh})#fm24fxxy"


@pytest.mark.parametrize(
    "text",
    ["raw(deadbeef)#89f8spxn", "raw(deedbeef)#89f8spxm", "raw(deadbeef)#89f8spx", "raw(deadbeef)#", "raw(dead", "foo(bar)", "raw(xyz)", "raw(deadbeef)\u00e9"],
)
def test_bad_descriptors(text: str) -> None:
    with pytest.raises(descriptors.DescriptorError):
        descriptors.parse(text, MAINNET)


def test_addr_descriptor_is_network_checked() -> None:
    address = script_to_address(b"\x00\x14" + H20, REGTEST)
    script = descriptors.parse(f"addr({address})", REGTEST)
    assert script == address_to_script(address, REGTEST) == b"\x00\x14" + H20
    with pytest.raises(descriptors.DescriptorError, match="Address is not valid"):
        descriptors.parse(f"addr({address})", MAINNET)
    assert descriptors.infer(script, REGTEST) == descriptors.with_checksum(f"addr({address})")
    assert descriptors.infer(b"\x51", REGTEST) == descriptors.with_checksum("raw(51)")


@pytest.mark.parametrize(
    "script, kind",
    [
        (b"\x76\xa9\x14" + H20 + b"\x88\xac", "pubkeyhash"),
        (b"\xa9\x14" + H20 + b"\x87", "scripthash"),
        (b"\x00\x14" + H20, "witness_v0_keyhash"),
        (b"\x00\x20" + hashlib.sha256(b"x").digest(), "witness_v0_scripthash"),
        (b"\x51\x20" + hashlib.sha256(b"x").digest(), "witness_v1_taproot"),
        (b"\x51\x02\x4e\x73", "anchor"),
        (b"\x52\x02\xaa\xbb", "witness_unknown"),
        (bytes([33]) + KEY + b"\xac", "pubkey"),
        (b"\x52" + bytes([33]) + KEY + bytes([33]) + KEY2 + b"\x52\xae", "multisig"),
        (b"\x6a\x04test", "nulldata"),
        (b"\x51", "nonstandard"),
        (b"\x4c", "nonstandard"),
    ],
)
def test_script_types(script: bytes, kind: str) -> None:
    assert coreviews.script_type(script) == kind


def test_asm_like_core() -> None:
    multisig = b"\x52" + bytes([33]) + KEY + bytes([33]) + KEY2 + b"\x52\xae"
    assert coreviews.script_asm(multisig) == f"2 {KEY.hex()} {KEY2.hex()} 2 OP_CHECKMULTISIG"
    cltv = b"\x63\x04\x00\x65\xcd\x1d\xb1\x75\x68"
    assert coreviews.script_asm(cltv) == "OP_IF 500000000 OP_CHECKLOCKTIMEVERIFY OP_DROP OP_ENDIF"
    assert coreviews.script_asm(b"\x00\x4f\x01\x81") == "0 -1 -1"
    assert coreviews.script_asm(b"\x4c") == "[error]"
    der_sig = bytes.fromhex("30440220" + "01" * 32 + "0220" + "02" * 32)
    sig = der_sig + b"\x83"
    script_sig = bytes([len(sig)]) + sig + bytes([33]) + KEY
    assert coreviews.script_asm(script_sig, decode_sighash=True) == f"{der_sig.hex()}[SINGLE|ANYONECANPAY] {KEY.hex()}"
    assert coreviews.script_asm(script_sig) == f"{sig.hex()} {KEY.hex()}"


def test_script_pubkey_json_and_inferred_descriptors() -> None:
    p2wpkh = b"\x00\x14" + H20
    view = coreviews.script_pubkey_json(p2wpkh, REGTEST)
    assert list(view) == ["asm", "desc", "hex", "address", "type"]
    assert view["address"].startswith("bcrt1q") and view["type"] == "witness_v0_keyhash"
    multisig = b"\x51" + bytes([33]) + KEY + b"\x51\xae"
    assert coreviews.descriptor(multisig, REGTEST) == descriptors.with_checksum(f"multi(1,{KEY.hex()})")
    assert "address" not in coreviews.script_pubkey_json(multisig, REGTEST)
    assert coreviews.descriptor(bytes([33]) + KEY + b"\xac", REGTEST) == descriptors.with_checksum(f"pk({KEY.hex()})")


def test_difficulty_and_work() -> None:
    assert coreviews.difficulty(0x1D00FFFF) == 1.0
    assert coreviews.difficulty(0x207FFFFF) == pytest.approx(4.656542373906925e-10)
    assert coreviews.block_work(0x207FFFFF) == 2
    assert coreviews.block_work(0x1D00FFFF) == 0x100010001
