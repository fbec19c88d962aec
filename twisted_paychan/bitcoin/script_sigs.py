"""
The scriptSigs that spend a channel's contract output (PROTOCOL.md §4.4, §4.7, §4.9).

| spend | v1 (bare 2-of-2) | v2 (P2SH CLTV) |
|---|---|---|
| refund | ``OP_0 <sig_C> <sig_S>`` | ``<sig_C> 01 00 <push redeem>`` |
| payment / settlement | ``OP_0 <sig_C> <sig_S>`` | ``<sig_C> <sig_S> OP_1 <push redeem>`` |

``OP_0`` in v1 is the dummy element CHECKMULTISIG consumes (NULLDUMMY requires it empty); the
signatures follow the key order of the script, client first. The v2 refund's branch selector is
the one-byte push ``01 00`` (false for OP_IF, and minimal for that data), not ``OP_0``: that is
what bitcoinj writes. Signatures are in wire form (DER + sighash byte).
"""

from __future__ import annotations

from typing import Optional

from twisted_paychan.bitcoin.scripts import OP_0, OP_1, ChannelScript, push_data

__all__ = [
    "multisig_script_sig",
    "v2_refund_script_sig",
    "v2_cooperative_script_sig",
    "refund_script_sig",
    "cooperative_script_sig",
]

_BRANCH_REFUND = b"\x00"


def multisig_script_sig(client_signature: bytes, server_signature: bytes) -> bytes:
    """v1 refund, payment and settlement: ``OP_0 <sig_C> <sig_S>``."""
    return bytes((OP_0,)) + push_data(client_signature) + push_data(server_signature)


def v2_refund_script_sig(client_signature: bytes, redeem_script: bytes) -> bytes:
    """v2 refund: ``<sig_C> 01 00 <push redeem>`` (the ELSE branch; needs nLockTime >= E)."""
    return push_data(client_signature) + push_data(_BRANCH_REFUND) + push_data(redeem_script)


def v2_cooperative_script_sig(
    client_signature: bytes, server_signature: bytes, redeem_script: bytes
) -> bytes:
    """v2 payment and settlement: ``<sig_C> <sig_S> OP_1 <push redeem>`` (the IF branch)."""
    return (
        push_data(client_signature)
        + push_data(server_signature)
        + bytes((OP_1,))
        + push_data(redeem_script)
    )


def refund_script_sig(
    channel: ChannelScript, client_signature: bytes, server_signature: Optional[bytes] = None
) -> bytes:
    """The refund's scriptSig for ``channel``; v1 needs the server's ``0x82`` signature."""
    if channel.version == 1:
        if server_signature is None:
            raise ValueError("a v1 refund needs the server's signature")
        return multisig_script_sig(client_signature, server_signature)
    if server_signature is not None:
        raise ValueError("a v2 refund carries the client's signature only")
    assert channel.redeem_script is not None
    return v2_refund_script_sig(client_signature, channel.redeem_script)


def cooperative_script_sig(channel: ChannelScript, client_signature: bytes, server_signature: bytes) -> bytes:
    """The settlement's (a completed payment's) scriptSig for ``channel``."""
    if channel.version == 1:
        return multisig_script_sig(client_signature, server_signature)
    assert channel.redeem_script is not None
    return v2_cooperative_script_sig(client_signature, server_signature, channel.redeem_script)
