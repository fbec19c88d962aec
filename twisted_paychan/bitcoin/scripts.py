"""
The output scripts of a channel, byte for byte as bitcoinj builds them (PROTOCOL.md §4.3–4.5).

- v1 locks the contract output in a bare 2-of-2 multisig, client key first.
- v2 locks it in P2SH around a CLTV redeem script: the server's key and the client's for the
  cooperative branch, the client's alone after ``E`` for the refund.
- Payments and the settlement send the client's change to P2PKH of the exact ``K_C`` bytes.

:class:`ChannelScript` bundles what every later step needs (script code for signing, the
contract's output script, the client's change script), computed once per channel. Keys are
checked with :func:`~twisted_paychan.bitcoin.keys.check_public_key` on the way in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

from twisted_paychan.bitcoin.keys import check_public_key
from twisted_paychan.constants import LOCKTIME_THRESHOLD, MAX_SCRIPT_TIME_BYTES, MAX_TIME

__all__ = [
    "OP_0",
    "OP_1",
    "OP_2",
    "hash160",
    "push_data",
    "encode_script_number",
    "decode_script_number",
    "ScriptNumberError",
    "InvalidExpireTime",
    "check_expire_time",
    "multisig_script",
    "cltv_redeem_script",
    "p2sh_script",
    "p2pkh_script",
    "p2sh_script_for_hash",
    "p2pkh_script_for_hash",
    "ChannelScript",
]

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_1 = 0x51
OP_2 = 0x52
OP_IF = 0x63
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_DROP = 0x75
OP_DUP = 0x76
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_HASH160 = 0xA9
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKMULTISIG = 0xAE
OP_CHECKLOCKTIMEVERIFY = 0xB1


def _ripemd160(data: bytes) -> bytes:
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:  # OpenSSL 3 builds without the legacy provider
        from bitcoin.core.contrib.ripemd160 import ripemd160

        return bytes(ripemd160(data))


def hash160(data: bytes) -> bytes:
    """RIPEMD-160(SHA-256(data)), the hash inside P2PKH, P2SH and P2WPKH scripts."""
    return _ripemd160(hashlib.sha256(data).digest())


def push_data(data: bytes) -> bytes:
    """Push ``data`` the way bitcoinj's ``ScriptBuilder.data`` does (BIP62 minimal pushes).

    Empty data is ``OP_0``; a single byte 1..16 is ``OP_1``..``OP_16``; anything else uses the
    shortest push opcode for its length. So the single byte ``0x00`` (the v2 refund's branch
    selector) is ``01 00``, and an 80-byte redeem script is ``4c 50 ...``.
    """
    n = len(data)
    if n == 0:
        return bytes((OP_0,))
    if n == 1 and 1 <= data[0] <= 16:
        return bytes((OP_1 - 1 + data[0],))
    if n < OP_PUSHDATA1:
        return bytes((n,)) + data
    if n <= 0xFF:
        return bytes((OP_PUSHDATA1, n)) + data
    if n <= 0xFFFF:
        return bytes((OP_PUSHDATA2,)) + n.to_bytes(2, "little") + data
    raise ValueError(f"push of {n} bytes is larger than any script we build")


class ScriptNumberError(ValueError):
    """Bytes that are not a (minimal, short enough) script number."""


def encode_script_number(value: int) -> bytes:
    """Minimal CScriptNum encoding: little-endian sign-magnitude, empty for zero."""
    if value == 0:
        return b""
    magnitude = abs(value)
    out = bytearray(magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little"))
    if out[-1] & 0x80:
        out.append(0x80 if value < 0 else 0x00)
    elif value < 0:
        out[-1] |= 0x80
    return bytes(out)


def decode_script_number(data: bytes, max_size: int = 4, require_minimal: bool = True) -> int:
    """Inverse of :func:`encode_script_number`, with Core's size and minimality rules."""
    if len(data) > max_size:
        raise ScriptNumberError(f"script number of {len(data)} bytes, at most {max_size} allowed")
    if not data:
        return 0
    if require_minimal and data[-1] & 0x7F == 0 and (len(data) == 1 or not data[-2] & 0x80):
        raise ScriptNumberError("script number is not minimally encoded")
    magnitude = int.from_bytes(data, "little")
    sign_bit = 0x80 << (8 * (len(data) - 1))
    if magnitude & sign_bit:
        return -(magnitude & ~sign_bit)
    return magnitude


class InvalidExpireTime(ValueError):
    """``E`` is not a timestamp an nLockTime can hold: below 500000000 or at least 2^32."""


def check_expire_time(expire_time: int) -> int:
    """Raise :class:`InvalidExpireTime` unless ``LOCKTIME_THRESHOLD <= E <= MAX_TIME``.

    Below the threshold the refund's nLockTime and the CLTV value would be read as a block
    height, not a time; at 2^32 or more they do not fit in an nLockTime at all.
    """
    if not isinstance(expire_time, int) or not LOCKTIME_THRESHOLD <= expire_time <= MAX_TIME:
        raise InvalidExpireTime(f"expire time {expire_time!r} is not in [{LOCKTIME_THRESHOLD}, 2^32)")
    return expire_time


def multisig_script(client_key: bytes, server_key: bytes) -> bytes:
    """v1 channel output: ``OP_2 <K_C> <K_S> OP_2 OP_CHECKMULTISIG``, client key first (§4.3)."""
    k_c = check_public_key(client_key)
    k_s = check_public_key(server_key)
    return bytes((OP_2,)) + push_data(k_c) + push_data(k_s) + bytes((OP_2, OP_CHECKMULTISIG))


def cltv_redeem_script(client_key: bytes, server_key: bytes, expire_time: int) -> bytes:
    """v2 redeem script (§4.4), bitcoinj's ``createCLTVPaymentChannelOutput(E, K_C, K_S)``::

        OP_IF <K_S> OP_CHECKSIGVERIFY OP_ELSE <E> OP_CHECKLOCKTIMEVERIFY OP_DROP OP_ENDIF
        <K_C> OP_CHECKSIG

    ``E`` is a minimal script number, 4 bytes below 2^31 and 5 (ending ``00``) up to 2^32 - 1.
    """
    k_c = check_public_key(client_key)
    k_s = check_public_key(server_key)
    time = encode_script_number(check_expire_time(expire_time))
    assert 4 <= len(time) <= MAX_SCRIPT_TIME_BYTES  # follows from the range check
    return (
        bytes((OP_IF,))
        + push_data(k_s)
        + bytes((OP_CHECKSIGVERIFY, OP_ELSE))
        + push_data(time)
        + bytes((OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_ENDIF))
        + push_data(k_c)
        + bytes((OP_CHECKSIG,))
    )


def p2sh_script_for_hash(script_hash: bytes) -> bytes:
    """``OP_HASH160 <20> OP_EQUAL`` around a 20-byte script hash the caller has checked."""
    return bytes((OP_HASH160, 20)) + script_hash + bytes((OP_EQUAL,))


def p2pkh_script_for_hash(key_hash: bytes) -> bytes:
    """``OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG`` around a 20-byte key hash the
    caller has checked."""
    return bytes((OP_DUP, OP_HASH160, 20)) + key_hash + bytes((OP_EQUALVERIFY, OP_CHECKSIG))


def p2sh_script(redeem_script: bytes) -> bytes:
    """``OP_HASH160 <HASH160(redeem)> OP_EQUAL`` = ``a9 14 <20> 87``."""
    return p2sh_script_for_hash(hash160(redeem_script))


def p2pkh_script(public_key: bytes) -> bytes:
    """``OP_DUP OP_HASH160 <HASH160(key)> OP_EQUALVERIFY OP_CHECKSIG`` over the exact key bytes
    given (compressed or not): the client's change output (§4.5)."""
    return p2pkh_script_for_hash(hash160(check_public_key(public_key)))


@dataclass(frozen=True)
class ChannelScript:
    """The scripts of one channel, computed once from its keys (and ``E`` for v2).

    ``script_code`` is what signatures commit to (v1: the multisig script; v2: the redeem
    script, not the P2SH wrapper); ``script_pubkey`` is contract output 0's script;
    ``client_change_script`` is P2PKH(``K_C``); ``redeem_script`` is None for v1.
    """

    version: int
    client_key: bytes
    server_key: bytes
    expire_time: Optional[int] = None
    script_code: bytes = field(init=False, repr=False)
    script_pubkey: bytes = field(init=False, repr=False)
    redeem_script: Optional[bytes] = field(init=False, repr=False)
    client_change_script: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.version == 1:
            if self.expire_time is not None:
                check_expire_time(self.expire_time)
            code = multisig_script(self.client_key, self.server_key)
            spk = code
            redeem: Optional[bytes] = None
        elif self.version == 2:
            if self.expire_time is None:
                raise InvalidExpireTime("a version 2 channel needs its expire time")
            redeem = cltv_redeem_script(self.client_key, self.server_key, self.expire_time)
            code = redeem
            spk = p2sh_script(redeem)
        else:
            raise ValueError(f"no channel protocol version {self.version!r}")
        object.__setattr__(self, "client_key", bytes(self.client_key))
        object.__setattr__(self, "server_key", bytes(self.server_key))
        object.__setattr__(self, "script_code", code)
        object.__setattr__(self, "script_pubkey", spk)
        object.__setattr__(self, "redeem_script", redeem)
        object.__setattr__(self, "client_change_script", p2pkh_script(self.client_key))

    @classmethod
    def v1(cls, client_key: bytes, server_key: bytes, expire_time: Optional[int] = None) -> "ChannelScript":
        """A v1 channel. ``E`` is not in a v1 script; keep it here if you like (refund lock)."""
        return cls(1, client_key, server_key, expire_time)

    @classmethod
    def v2(cls, client_key: bytes, server_key: bytes, expire_time: int) -> "ChannelScript":
        return cls(2, client_key, server_key, expire_time)
