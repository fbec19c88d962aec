"""
Bitcoin Core's script interpreter as the judge of every spend we build or receive.

py-bitcoinkernel runs Bitcoin Core's own ``VerifyScript``. It is sharp: an unknown flag bit or
an input index past the end aborts the whole process (a C assertion, not an exception), it
accepts a transaction with trailing garbage, and it returns an int. This module is the only
place that calls it; it validates every argument first and returns a real ``bool``.

The kernel exposes consensus flags only. Bitcoin Core's mempool additionally applies policy
flags (LOW_S, STRICTENC, SIGPUSHONLY, ...), which a settlement or refund must also satisfy to be
relayed. :func:`verify_input` therefore checks, on top of the kernel, the policy rules that matter
for the spends this project makes: the scriptSig is push-only, and every signature pushed in it is
strict DER with a low S and a defined sighash type.
"""

from __future__ import annotations

import enum
from typing import Final

import pbk

from twisted_paychan.bitcoin import der
from twisted_paychan.constants import MAX_MONEY


class ScriptFlags(enum.IntFlag):
    """The consensus flags the kernel knows; any other bit would abort the process."""

    NONE = 0
    P2SH = 1 << 0
    DERSIG = 1 << 2
    NULLDUMMY = 1 << 4
    CHECKLOCKTIMEVERIFY = 1 << 9
    CHECKSEQUENCEVERIFY = 1 << 10
    WITNESS = 1 << 11


#: Every consensus rule active on mainnet and regtest for the legacy and segwit-v0 spends we
#: make. TAPROOT is left out: it needs all spent outputs, and we never spend taproot outputs.
STANDARD_FLAGS: Final = (
    ScriptFlags.P2SH
    | ScriptFlags.DERSIG
    | ScriptFlags.NULLDUMMY
    | ScriptFlags.CHECKLOCKTIMEVERIFY
    | ScriptFlags.CHECKSEQUENCEVERIFY
    | ScriptFlags.WITNESS
)

_KNOWN_BITS: Final = int(STANDARD_FLAGS)


class JudgeArgumentError(ValueError):
    """We were about to hand the kernel something that would abort the process or lie."""


def _check_flags(flags: int) -> int:
    flags = int(flags)
    if flags < 0 or flags & ~_KNOWN_BITS:
        raise JudgeArgumentError(f"unknown script verification flag bits: {flags:#x}")
    if flags & ScriptFlags.WITNESS and not flags & ScriptFlags.P2SH:
        raise JudgeArgumentError("WITNESS requires P2SH")
    return flags


def _input_count(tx_bytes: bytes) -> int:
    """Parse ``tx_bytes`` strictly (no trailing bytes) and return its number of inputs."""
    from bitcoin.core import CTransaction

    try:
        tx = CTransaction.deserialize(tx_bytes)
    except Exception as e:  # python-bitcoinlib raises several types for bad input
        raise JudgeArgumentError(f"transaction does not parse: {e}") from e
    return len(tx.vin)


def verify_input_consensus(
    tx_bytes: bytes,
    input_index: int,
    script_pubkey: bytes,
    amount: int,
    flags: int = STANDARD_FLAGS,
) -> bool:
    """Run Bitcoin Core's interpreter on input ``input_index`` of ``tx_bytes``.

    ``script_pubkey`` and ``amount`` describe the output being spent (the amount matters for
    segwit inputs only, but must be a valid amount anyway). Returns True only when the kernel
    accepts the spend under ``flags``. Arguments that would crash or mislead the kernel raise
    :class:`JudgeArgumentError` instead of being passed on.
    """
    flags = _check_flags(flags)
    if not isinstance(input_index, int) or input_index < 0:
        raise JudgeArgumentError(f"bad input index {input_index!r}")
    if not 0 <= amount <= MAX_MONEY:
        raise JudgeArgumentError(f"amount out of range: {amount}")
    n_inputs = _input_count(tx_bytes)
    if input_index >= n_inputs:
        raise JudgeArgumentError(f"input index {input_index} but the transaction has {n_inputs} inputs")
    try:
        ok = pbk.ScriptPubkey(bytes(script_pubkey)).verify(
            amount, pbk.Transaction(bytes(tx_bytes)), None, input_index, pbk.ScriptVerificationFlags(flags)
        )
    except pbk.ScriptVerifyException as e:  # only flag combinations; we checked them above
        raise JudgeArgumentError(str(e)) from e
    return bool(ok)


def standard_signature_pushes_ok(script_sig: bytes) -> bool:
    """Policy checks Bitcoin Core applies in its mempool but the kernel cannot (no LOW_S,
    STRICTENC or SIGPUSHONLY flags in its API), restricted to what our spends contain.

    The scriptSig must be push-only, and every push shaped like a signature (starts with 0x30,
    9 to 73 bytes) must be strict DER with low S and a defined sighash type.
    """
    from bitcoin.core.script import CScript, CScriptInvalidError

    try:
        elements = list(CScript(script_sig).raw_iter())
    except CScriptInvalidError:
        return False
    for opcode, data, _ in elements:
        if opcode > 0x60:  # OP_16: anything above is not a push
            return False
        if data and data[0] == 0x30 and 9 <= len(data) <= 73:
            try:
                sig = der.parse_signature(data)
            except der.SignatureEncodingError:
                return False
            if not sig.is_low_s():
                return False
    return True


def verify_input(
    tx_bytes: bytes,
    input_index: int,
    script_pubkey: bytes,
    amount: int,
    flags: int = STANDARD_FLAGS,
) -> bool:
    """The judge: the kernel's consensus verdict plus the signature policy of a relaying node.

    Use this for everything we build or receive; it is what decides whether Bitcoin Core would
    accept the spend into its mempool (script-wise; finality and fees are the mempool's job).
    """
    if not verify_input_consensus(tx_bytes, input_index, script_pubkey, amount, flags):
        return False
    from bitcoin.core import CTransaction

    tx = CTransaction.deserialize(tx_bytes)
    return standard_signature_pushes_ok(bytes(tx.vin[input_index].scriptSig))
