"""Channel scripts byte for byte (spec §4.3–4.5), script numbers and pushes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_paychan.bitcoin.keys import KeySigner, NonCanonicalPublicKey
from twisted_paychan.bitcoin.scripts import (
    ChannelScript,
    InvalidExpireTime,
    ScriptNumberError,
    cltv_redeem_script,
    decode_script_number,
    encode_script_number,
    hash160,
    multisig_script,
    p2pkh_script,
    p2sh_script,
    push_data,
)

G = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
TWO_G = bytes.fromhex("02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5")


def test_worked_example_of_section_4_4() -> None:
    """K_S = G, K_C = 2G, E = 1500000000, literally as the spec prints it."""
    redeem = cltv_redeem_script(client_key=TWO_G, server_key=G, expire_time=1_500_000_000)
    assert redeem == bytes.fromhex(
        "63" "21" "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798" "ad" "67"
        "04" "002f6859" "b1" "75" "68"
        "21" "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5" "ac"
    )
    assert len(redeem) == 80
    assert hash160(redeem).hex() == "49a4ce917ec22f1a863c27c532e2f40ff405d144"
    assert p2sh_script(redeem).hex() == "a914" "49a4ce917ec22f1a863c27c532e2f40ff405d144" "87"
    ch = ChannelScript.v2(TWO_G, G, 1_500_000_000)
    assert ch.script_code == ch.redeem_script == redeem
    assert ch.script_pubkey == p2sh_script(redeem)


@pytest.mark.parametrize(
    "expire_time, push",
    [
        (1_500_000_000, "04002f6859"),
        (2_200_000_000, "050056218300"),
        (4_294_967_295, "05ffffffff00"),
        (500_000_000, "040065cd1d"),
        (2**31 - 1, "04ffffff7f"),
        (2**31, "050000008000"),
    ],
)
def test_expire_time_pushes(expire_time: int, push: str) -> None:
    redeem = cltv_redeem_script(TWO_G, G, expire_time)
    start = 1 + 34 + 2
    assert redeem[start : start + len(push) // 2].hex() == push
    assert redeem[start + len(push) // 2 : start + len(push) // 2 + 3].hex() == "b17568"


@pytest.mark.parametrize("bad", [0, 499_999_999, 2**32, 2**63, -1, 1_500_000_000.0])
def test_expire_time_out_of_range(bad: object) -> None:
    with pytest.raises(InvalidExpireTime):
        cltv_redeem_script(TWO_G, G, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidExpireTime):
        ChannelScript.v2(TWO_G, G, bad)  # type: ignore[arg-type]


def test_v1_multisig_client_key_first() -> None:
    script = multisig_script(client_key=TWO_G, server_key=G)
    assert script == bytes.fromhex("52" "21") + TWO_G + b"\x21" + G + bytes.fromhex("52ae")
    assert len(script) == 71
    ch = ChannelScript.v1(TWO_G, G)
    assert ch.script_code == ch.script_pubkey == script
    assert ch.redeem_script is None


def test_uncompressed_keys_use_65_byte_pushes() -> None:
    k_c = KeySigner((2).to_bytes(32, "big"), compressed=False).public_key
    assert multisig_script(k_c, G)[:2] == b"\x52\x41"
    redeem = cltv_redeem_script(k_c, G, 1_500_000_000)
    assert redeem[-67:] == b"\x41" + k_c + b"\xac"
    assert len(redeem) == 80 + 32


def test_client_change_is_p2pkh_of_the_exact_key_bytes() -> None:
    # HASH160 of the compressed generator point, a well-known value.
    assert p2pkh_script(G).hex() == "76a914" "751e76e8199196d454941c45d1b3a323f1433bd6" "88ac"
    uncompressed_g = KeySigner((1).to_bytes(32, "big"), compressed=False).public_key
    assert p2pkh_script(uncompressed_g) != p2pkh_script(G)
    assert ChannelScript.v1(G, TWO_G).client_change_script == p2pkh_script(G)


def test_channel_script_argument_checks() -> None:
    with pytest.raises(InvalidExpireTime):
        ChannelScript(2, TWO_G, G)
    with pytest.raises(ValueError):
        ChannelScript(3, TWO_G, G, 1_500_000_000)
    with pytest.raises(NonCanonicalPublicKey):
        ChannelScript.v1(b"\x06" + TWO_G[1:] + b"\x00" * 32, G)
    with pytest.raises(InvalidExpireTime):
        ChannelScript.v1(TWO_G, G, 100)


@pytest.mark.parametrize(
    "data, opcodes",
    [
        (b"", "00"),
        (b"\x00", "01"),
        (b"\x01", "51"),
        (b"\x10", "60"),
        (b"\x11", "01"),
        (b"\x81", "01"),
        (b"\xaa" * 75, "4b"),
        (b"\xaa" * 76, "4c4c"),
        (b"\xaa" * 80, "4c50"),
        (b"\xaa" * 255, "4cff"),
        (b"\xaa" * 256, "4d0001"),
    ],
)
def test_push_data(data: bytes, opcodes: str) -> None:
    """``opcodes`` is the push opcode part; OP_0 and OP_1..OP_16 carry no data after it."""
    pushed = push_data(data)
    assert pushed[: len(opcodes) // 2].hex() == opcodes
    in_opcode = data == b"" or (len(data) == 1 and 1 <= data[0] <= 16)
    assert pushed[len(opcodes) // 2 :] == (b"" if in_opcode else data)


@pytest.mark.parametrize(
    "value, encoded",
    [(0, ""), (1, "01"), (-1, "81"), (127, "7f"), (128, "8000"), (-128, "8080"), (255, "ff00"),
     (256, "0001"), (1_500_000_000, "002f6859"), (4_294_967_295, "ffffffff00")],
)
def test_script_number_examples(value: int, encoded: str) -> None:
    assert encode_script_number(value).hex() == encoded
    assert decode_script_number(bytes.fromhex(encoded), max_size=5) == value


@given(st.integers(min_value=-(2**39) + 1, max_value=2**39 - 1))
def test_script_number_round_trip(value: int) -> None:
    encoded = encode_script_number(value)
    assert len(encoded) <= 5
    assert decode_script_number(encoded, max_size=5) == value


@given(st.binary(min_size=1, max_size=5))
def test_decode_accepts_exactly_the_minimal_encodings(data: bytes) -> None:
    try:
        value = decode_script_number(data, max_size=5)
    except ScriptNumberError:
        assert encode_script_number(decode_script_number(data, max_size=5, require_minimal=False)) != data
    else:
        assert encode_script_number(value) == data


def test_decode_limits() -> None:
    with pytest.raises(ScriptNumberError):
        decode_script_number(b"\x01\x02\x03\x04\x05")  # 5 bytes, default limit 4
    with pytest.raises(ScriptNumberError):
        decode_script_number(b"\x00")
    with pytest.raises(ScriptNumberError):
        decode_script_number(b"\x01\x00")
    assert decode_script_number(b"\x01\x00", require_minimal=False) == 1
    assert decode_script_number(b"\x80", require_minimal=False) == 0  # negative zero
