"""
The two output descriptors ``scantxoutset`` needs to find coins by script: ``addr(ADDRESS)``
and ``raw(HEX)`` (BIP380/BIP385), with the optional ``#checksum``.

The checksum is BIP380's: a BCH code over the descriptor's characters (each worth 5 bits plus a
3-bit group symbol), eight characters of the bech32 alphabet. A descriptor given with a checksum
must carry the right one; one given without is accepted, as ``scantxoutset`` accepts it.
Key-based descriptors (``pkh(...)``, ``wpkh(...)``, xpubs, ranges) are not supported: the
client never needs them, and an ``addr()`` covers every standard script.
"""

from __future__ import annotations

from typing import Final

from twisted_paychan.bitcoin.addresses import AddressError, Network, address_to_script, script_to_address

_INPUT_CHARSET: Final = (
    "0123456789()[],'/*abcdefgh@:$%{}"
    "IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
    "ijklmnopqrstuvwxyzABCDEFGH`#\"\\ "
)
_CHECKSUM_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR: Final = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


class DescriptorError(ValueError):
    """Not a descriptor this node understands; the message is what ``scantxoutset`` says."""


def _polymod(symbols: list[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = (chk & 0x7FFFFFFFF) << 5 ^ value
        for i, g in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _expand(text: str) -> list[int]:
    symbols: list[int] = []
    groups: list[int] = []
    for c in text:
        position = _INPUT_CHARSET.find(c)
        if position < 0:
            raise DescriptorError(f"Invalid character in descriptor: {c!r}")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    return symbols


def checksum(text: str) -> str:
    """The eight-character BIP380 checksum of a descriptor (without its ``#...``)."""
    value = _polymod(_expand(text) + [0] * 8) ^ 1
    return "".join(_CHECKSUM_CHARSET[(value >> (5 * (7 - i))) & 31] for i in range(8))


def with_checksum(text: str) -> str:
    return f"{text}#{checksum(text)}"


def parse(descriptor: str, network: Network) -> bytes:
    """The output script an ``addr()`` or ``raw()`` descriptor stands for."""
    body, sep, given = descriptor.partition("#")
    if sep:
        if len(given) != 8:
            raise DescriptorError(f"Expected 8 character checksum, not {len(given)} characters")
        expected = checksum(body)
        if given != expected:
            raise DescriptorError(f"Provided checksum '{given}' does not match computed checksum '{expected}'")
    else:
        _expand(body)  # the characters must be valid even without a checksum
    function, paren, rest = body.partition("(")
    if not paren or not rest.endswith(")"):
        raise DescriptorError(f"'{body}' is not a valid descriptor function")
    argument = rest[:-1]
    if function == "addr":
        try:
            return address_to_script(argument, network)
        except AddressError as e:
            raise DescriptorError(f"Address is not valid: {e}") from None
    if function == "raw":
        try:
            script = bytes.fromhex(argument)
        except ValueError:
            raise DescriptorError("Raw script is not hex") from None
        if not script:
            raise DescriptorError("Raw script is empty")  # Core would accept; nothing pays it
        return script
    raise DescriptorError(f"'{function}(...)' descriptors are not supported here; use addr(...) or raw(...)")


def infer(script_pubkey: bytes, network: Network) -> str:
    """The descriptor Core reports for a coin whose keys it does not know: ``addr()`` for a
    standard script, ``raw()`` for anything else, with its checksum."""
    try:
        return with_checksum(f"addr({script_to_address(script_pubkey, network)})")
    except AddressError:
        return with_checksum(f"raw({bytes(script_pubkey).hex()})")
