"""Addresses: BIP173/BIP350 vectors, Base58Check, and script round trips per network."""

import coincurve
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_paychan.bitcoin.addresses import (
    BECH32,
    BECH32M,
    MAINNET,
    REGTEST,
    TESTNET,
    AddressError,
    address_to_script,
    base58check_decode,
    base58check_encode,
    bech32_decode,
    bech32_encode,
    hash160,
    p2pkh_script,
    p2sh_script,
    p2wpkh_script,
    script_to_address,
)

# The public key of private key 1 (the generator point): its hash is in the BIP173 vectors.
G = coincurve.PrivateKey((1).to_bytes(32, "big")).public_key.format()
G_HASH = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")


def test_hash160_of_generator():
    assert hash160(G) == G_HASH


# -- BIP173 / BIP350 ------------------------------------------------------------------------

VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]


@pytest.mark.parametrize("text", VALID_BECH32)
def test_bip173_valid_checksums(text):
    hrp, data, spec = bech32_decode(text)
    assert spec == BECH32
    assert bech32_encode(hrp, data, spec) == text.lower()


INVALID_BECH32 = [
    "\x201nwldj5",  # HRP character out of range
    "\x7f1axkwrx",
    "\x801eym55h",
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
    "pzry9x0s0muk",  # no separator
    "1pzry9x0s0muk",  # empty HRP
    "x1b4n0q5v",  # invalid data character
    "li1dgmt3",  # checksum too short
    "de1lg7wt\xff",
    "A1G7SGD8",  # checksum computed over the upper-case HRP
    "10a06t8",
    "1qzzfhee",
]


@pytest.mark.parametrize("text", INVALID_BECH32)
def test_bip173_invalid_checksums(text):
    with pytest.raises(AddressError):
        bech32_decode(text)


VALID_SEGWIT = [
    (MAINNET, "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        TESTNET,
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        TESTNET,
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    # BIP350: versions 1..16 use Bech32m.
    (
        MAINNET,
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    (MAINNET, "BC1SW50QGDZ25J", "6002751e"),
    (MAINNET, "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        MAINNET,
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]


@pytest.mark.parametrize("network,address,script_hex", VALID_SEGWIT)
def test_segwit_address_vectors(network, address, script_hex):
    script = bytes.fromhex(script_hex)
    assert address_to_script(address, network) == script
    assert script_to_address(script, network) == address.lower()


INVALID_SEGWIT = [
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",  # unknown HRP
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # bad checksum
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",  # witness version 17
    "bc1rw5uspcuh",  # program too short
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",  # too long
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # 16-byte v0 program
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",  # mixed case
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # more than 4 bits of padding
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",  # non-zero padding
    "bc1gmk9yu",  # empty data
    # BIP350: a version 1+ program with a Bech32 checksum (valid under BIP173 alone).
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
]


@pytest.mark.parametrize("address", INVALID_SEGWIT)
@pytest.mark.parametrize("network", [MAINNET, TESTNET])
def test_invalid_segwit_addresses(address, network):
    with pytest.raises(AddressError):
        address_to_script(address, network)


def test_v0_needs_bech32_and_v1_bech32m():
    v0_with_bech32m = bech32_encode("bc", [0] + [0] * 32, BECH32M)
    with pytest.raises(AddressError, match="Bech32"):
        address_to_script(v0_with_bech32m, MAINNET)


# -- Base58Check ----------------------------------------------------------------------------


def test_p2pkh_of_generator_on_mainnet():
    script = p2pkh_script(G_HASH)
    assert script_to_address(script, MAINNET) == "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH"
    assert address_to_script("1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH", MAINNET) == script


def test_leading_zero_bytes_become_ones():
    assert base58check_encode(b"\0" * 21).startswith("1" * 21)
    assert base58check_decode(base58check_encode(b"\0" * 21)) == b"\0" * 21


def test_base58_errors():
    good = script_to_address(p2pkh_script(G_HASH), MAINNET)
    with pytest.raises(AddressError, match="checksum"):
        base58check_decode(good[:-1] + ("1" if good[-1] != "1" else "2"))
    with pytest.raises(AddressError, match="base58 character"):
        base58check_decode("0OIl")
    with pytest.raises(AddressError):
        address_to_script(base58check_encode(b"\x00" + b"\x01" * 19), MAINNET)  # 20-byte payload


def test_wrong_network_is_refused():
    regtest = script_to_address(p2wpkh_script(G_HASH), REGTEST)
    assert regtest.startswith("bcrt1q")
    with pytest.raises(AddressError, match="mainnet"):
        address_to_script(regtest, MAINNET)
    legacy_main = script_to_address(p2pkh_script(G_HASH), MAINNET)
    with pytest.raises(AddressError, match="testnet"):
        address_to_script(legacy_main, TESTNET)


def test_testnet_and_regtest_share_base58_versions():
    script = p2pkh_script(G_HASH)
    addr = script_to_address(script, TESTNET)
    assert addr[0] in "mn"
    assert address_to_script(addr, REGTEST) == script
    p2sh = script_to_address(p2sh_script(G_HASH), REGTEST)
    assert p2sh[0] == "2"


def test_non_standard_script_has_no_address():
    with pytest.raises(AddressError):
        script_to_address(bytes([0x51]), MAINNET)  # OP_TRUE
    with pytest.raises(AddressError):
        script_to_address(bytes.fromhex("21") + G + bytes([0xAC]), MAINNET)  # bare P2PK


# -- Properties -----------------------------------------------------------------------------

networks = st.sampled_from([MAINNET, TESTNET, REGTEST])
hashes = st.binary(min_size=20, max_size=20)


@given(networks, hashes, st.sampled_from([p2pkh_script, p2sh_script, p2wpkh_script]))
def test_script_address_round_trip(network, h, make_script):
    script = make_script(h)
    address = script_to_address(script, network)
    assert address_to_script(address, network) == script
    assert address_to_script(address.upper() if address[:2] in ("bc", "tb") else address, network) == script


@given(st.binary(max_size=40))
def test_base58check_round_trip(payload):
    assert base58check_decode(base58check_encode(payload)) == payload
