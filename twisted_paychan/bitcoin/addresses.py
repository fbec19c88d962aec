"""
Addresses: the human form of the output scripts the wallet receives on and pays to.

The wallet needs them (a person funds it by address, or asks it to pay one), and so do the RPC
server and the command line, which show and take them as Bitcoin Core does; channels deal in
scripts. python-bitcoinlib has address classes, but they live in ``bitcoin.wallet``, which
loads OpenSSL through ctypes at import, and they read the network from a process-global; so the
two encodings are written here, small and explicit about the network:

* Base58Check (legacy P2PKH and P2SH): a version byte, the 20-byte hash, a 4-byte double-SHA256
  checksum, in base 58.
* Bech32 (BIP173) for witness version 0 and Bech32m (BIP350) for versions 1 to 16: the network's
  human-readable part, then the version and program in 5-bit groups with a BCH checksum.

Decoding is strict: wrong network, wrong checksum, mixed case, bad lengths and non-zero padding
are all :class:`AddressError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Sequence

from twisted_paychan.bitcoin.policy import is_witness_program
from twisted_paychan.bitcoin.scripts import (
    OP_0,
    OP_1,
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUAL,
    OP_EQUALVERIFY,
    OP_HASH160,
    hash160,
    p2pkh_script_for_hash,
    p2sh_script_for_hash,
)

__all__ = [
    "AddressError",
    "Network",
    "MAINNET",
    "TESTNET",
    "REGTEST",
    "NETWORKS",
    "hash160",
    "p2pkh_script",
    "p2sh_script",
    "p2wpkh_script",
    "witness_script",
    "base58check_encode",
    "base58check_decode",
    "bech32_encode",
    "bech32_decode",
    "encode_segwit_address",
    "decode_segwit_address",
    "address_to_script",
    "script_to_address",
]


class AddressError(ValueError):
    """Not a valid address (or script) for the network in question."""


@dataclass(frozen=True)
class Network:
    """The address parameters of one Bitcoin network."""

    name: str
    p2pkh_version: int
    p2sh_version: int
    bech32_hrp: str


MAINNET: Final = Network("mainnet", 0x00, 0x05, "bc")
#: Testnet3, testnet4 and signet share these parameters.
TESTNET: Final = Network("testnet", 0x6F, 0xC4, "tb")
REGTEST: Final = Network("regtest", 0x6F, 0xC4, "bcrt")
NETWORKS: Final = {n.name: n for n in (MAINNET, TESTNET, REGTEST)}


# -- Scripts ----------------------------------------------------------------------------------
# The wallet's builders take a hash (an address carries one) and say AddressError on a bad
# length; the templates and hash160 themselves are bitcoin.scripts', re-exported here.


def p2pkh_script(key_hash: bytes) -> bytes:
    """OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG"""
    _need_len(key_hash, 20, "a P2PKH key hash")
    return p2pkh_script_for_hash(key_hash)


def p2sh_script(script_hash: bytes) -> bytes:
    """OP_HASH160 <20> OP_EQUAL"""
    _need_len(script_hash, 20, "a P2SH script hash")
    return p2sh_script_for_hash(script_hash)


def p2wpkh_script(key_hash: bytes) -> bytes:
    """OP_0 <20>"""
    _need_len(key_hash, 20, "a P2WPKH key hash")
    return witness_script(0, key_hash)


def witness_script(version: int, program: bytes) -> bytes:
    """OP_n <program>: a segwit output script, checked as BIP141 and BIP341 require."""
    _check_witness_program(version, program)
    op = OP_0 if version == 0 else OP_1 + version - 1
    return bytes([op, len(program)]) + program


def _need_len(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise AddressError(f"{what} is {n} bytes, got {len(data)}")


def _check_witness_program(version: int, program: bytes) -> None:
    if not 0 <= version <= 16:
        raise AddressError(f"witness version must be 0..16, got {version}")
    if not 2 <= len(program) <= 40:
        raise AddressError(f"witness program must be 2..40 bytes, got {len(program)}")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError(f"a version 0 witness program is 20 or 32 bytes, got {len(program)}")


# -- Base58Check ------------------------------------------------------------------------------

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def base58check_encode(payload: bytes) -> str:
    """Base58 of ``payload`` followed by its 4-byte checksum; leading zero bytes become '1'."""
    data = payload + _checksum(payload)
    n = int.from_bytes(data, "big")
    digits = []
    while n:
        n, r = divmod(n, 58)
        digits.append(_B58_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def base58check_decode(text: str) -> bytes:
    """The payload of a Base58Check string (checksum verified and removed)."""
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise AddressError(f"not a base58 character: {c!r}")
        n = n * 58 + _B58_INDEX[c]
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    data = b"\0" * zeros + body
    if len(data) < 4:
        raise AddressError("base58check string too short")
    payload, check = data[:-4], data[-4:]
    if _checksum(payload) != check:
        raise AddressError("base58check checksum mismatch")
    return payload


# -- Bech32 / Bech32m -------------------------------------------------------------------------

_BECH32_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX: Final = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
#: The constant the checksum polymod must equal: 1 for Bech32 (BIP173), this for Bech32m.
BECH32: Final = 1
BECH32M: Final = 0x2BC830A3
#: BIP173 limits the whole string to 90 characters.
_BECH32_MAX_LENGTH: Final = 90


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: Sequence[int], spec: int = BECH32) -> str:
    """``hrp`` + '1' + ``data`` (5-bit values) + 6-character checksum, lower case."""
    values = _hrp_expand(hrp) + list(data)
    poly = _polymod(values + [0] * 6) ^ spec
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in list(data) + checksum)


def bech32_decode(text: str) -> tuple[str, list[int], int]:
    """(hrp, 5-bit data without checksum, BECH32 or BECH32M) of a Bech32(m) string."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise AddressError("bech32 string has characters outside US-ASCII 33..126")
    if text.lower() != text and text.upper() != text:
        raise AddressError("bech32 string mixes upper and lower case")
    if len(text) > _BECH32_MAX_LENGTH:
        raise AddressError(f"bech32 string longer than {_BECH32_MAX_LENGTH} characters")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1 or sep + 7 > len(text):
        raise AddressError("bech32 string has no human-readable part or a short checksum")
    hrp = text[:sep]
    try:
        data = [_BECH32_INDEX[c] for c in text[sep + 1 :]]
    except KeyError as e:
        raise AddressError(f"not a bech32 character: {e.args[0]!r}") from None
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (BECH32, BECH32M):
        raise AddressError("bech32 checksum mismatch")
    return hrp, data[:-6], const


def _convert_bits(data: Sequence[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits:
        raise AddressError("bech32 data has more than 4 bits of padding")
    elif (acc << (to_bits - bits)) & maxv:
        raise AddressError("bech32 data has non-zero padding")
    return out


def encode_segwit_address(hrp: str, version: int, program: bytes) -> str:
    """A segwit address: Bech32 for version 0, Bech32m for the others."""
    _check_witness_program(version, program)
    spec = BECH32 if version == 0 else BECH32M
    return bech32_encode(hrp, [version] + _convert_bits(program, 8, 5, pad=True), spec)


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    """(witness version, program) of a segwit address for the network whose HRP is ``hrp``."""
    got_hrp, data, spec = bech32_decode(address)
    if got_hrp != hrp:
        raise AddressError(f"address is for {got_hrp!r}, expected {hrp!r}")
    if not data:
        raise AddressError("segwit address has no witness version")
    version = data[0]
    program = bytes(_convert_bits(data[1:], 5, 8, pad=False))
    _check_witness_program(version, program)
    if (version == 0) != (spec == BECH32):
        raise AddressError("version 0 needs a Bech32 checksum and versions 1+ Bech32m")
    return version, program


# -- Address <-> script -----------------------------------------------------------------------


def address_to_script(address: str, network: Network) -> bytes:
    """The scriptPubKey an address stands for, on ``network`` (else :class:`AddressError`)."""
    hrp_prefix = network.bech32_hrp + "1"
    if address.lower().startswith(hrp_prefix):
        version, program = decode_segwit_address(network.bech32_hrp, address)
        return witness_script(version, program)
    try:
        payload = base58check_decode(address)
    except AddressError:
        if "1" in address:  # looks like bech32 for another network; say so
            hrp = address.lower().rsplit("1", 1)[0]
            if hrp in {n.bech32_hrp for n in NETWORKS.values()}:
                raise AddressError(
                    f"{address!r} is a {hrp!r} address, not for {network.name}"
                ) from None
        raise
    if len(payload) != 21:
        raise AddressError(f"a base58 address has a 21-byte payload, got {len(payload)}")
    version, h = payload[0], payload[1:]
    if version == network.p2pkh_version:
        return p2pkh_script(h)
    if version == network.p2sh_version:
        return p2sh_script(h)
    raise AddressError(f"address version {version:#04x} is not used on {network.name}")


def script_to_address(script_pubkey: bytes, network: Network) -> str:
    """The address of a standard output script; :class:`AddressError` for any other script."""
    s = bytes(script_pubkey)
    if len(s) == 25 and s[:3] == bytes([OP_DUP, OP_HASH160, 20]) and s[23:] == bytes(
        [OP_EQUALVERIFY, OP_CHECKSIG]
    ):
        return base58check_encode(bytes([network.p2pkh_version]) + s[3:23])
    if len(s) == 23 and s[:2] == bytes([OP_HASH160, 20]) and s[22] == OP_EQUAL:
        return base58check_encode(bytes([network.p2sh_version]) + s[2:22])
    if is_witness_program(s):
        version = 0 if s[0] == OP_0 else s[0] - OP_1 + 1
        return encode_segwit_address(network.bech32_hrp, version, s[2:])
    raise AddressError(f"no address form for script {s.hex()}")
