"""
The refund: the client's way back to its money at ``E`` (PROTOCOL.md §4.7).

Layout, both versions: version 1; one input, contract:0 with sequence ``0xFFFFFFFE`` (non-final,
so the lock time counts; not an RBF signal); one output P2PKH(``K_C``) of ``V - 1000``;
nLockTime ``E``.

v1: the client sends it unsigned in PROVIDE_REFUND; the server signs NONE|ANYONECANPAY (``0x82``,
committing only to this input and the lock time), the client signs ALL (``0x01``), and the
scriptSig is ``OP_0 <sig_C> <sig_S>``. v2: the client alone signs ALL over the redeem script and
spends the CLTV branch. The fee is bitcoinj's fixed 1000 sat unless the caller bumps it (§13
item 11 recommends re-signing a v2 refund with a realistic fee).
"""

from __future__ import annotations

from typing import Optional

from twisted_paychan.bitcoin import der
from twisted_paychan.bitcoin.script_sigs import refund_script_sig
from twisted_paychan.bitcoin.scripts import ChannelScript, check_expire_time
from twisted_paychan.bitcoin.sighash import signature_hash
from twisted_paychan.bitcoin.signatures import sign, verify_peer_signature
from twisted_paychan.bitcoin.transactions import Transaction, make_transaction, tx_input, tx_output
from twisted_paychan.chain.interfaces import ISigner
from twisted_paychan.constants import (
    P2PKH_DUST_LIMIT,
    REFUND_FEE,
    REFUND_SEQUENCE,
    SIGHASH_ALL,
    SIGHASH_NONE_ANYONECANPAY,
    TX_VERSION,
)

__all__ = [
    "build_refund",
    "refund_sighash",
    "server_refund_signature",
    "verify_server_refund_signature",
    "client_refund_signature",
    "with_refund_script_sig",
    "build_signed_refund",
]


def build_refund(
    channel: ChannelScript,
    contract_txid: bytes,
    contract_value: int,
    *,
    fee: int = REFUND_FEE,
    sequence: int = REFUND_SEQUENCE,
) -> Transaction:
    """The unsigned refund (empty scriptSig): what a v1 client sends in PROVIDE_REFUND.

    ``channel.expire_time`` is the lock time ``E`` (required, v1 included). ``sequence`` may be
    set to 0 to talk to servers older than bitcoinj 0.14 (§13 item 21); never ``0xFFFFFFFF``.
    """
    if channel.expire_time is None:
        raise ValueError("the refund's lock time is the channel's expire time; none given")
    lock_time = check_expire_time(channel.expire_time)
    if sequence == 0xFFFFFFFF or not 0 <= sequence < 0xFFFFFFFF:
        raise ValueError("a refund's sequence must be non-final, or its lock time is ignored")
    value = contract_value - fee
    if fee < 0 or value < P2PKH_DUST_LIMIT:
        raise ValueError(f"refund output {value} would be dust (< {P2PKH_DUST_LIMIT})")
    return make_transaction(
        [tx_input(contract_txid, 0, sequence)],
        [tx_output(value, channel.client_change_script)],
        lock_time=lock_time,
        version=TX_VERSION,
    )


def refund_sighash(refund: Transaction, channel: ChannelScript, hashtype: int) -> bytes:
    """Digest of the refund's input 0 over the channel's script code."""
    return signature_hash(refund, 0, channel.script_code, hashtype)


def server_refund_signature(signer: ISigner, refund: Transaction, channel: ChannelScript) -> bytes:
    """v1 RETURN_REFUND: the server's ``0x82`` (NONE|ANYONECANPAY) signature with ``K_S``."""
    if channel.version != 1:
        raise ValueError("only v1 refunds carry a server signature")
    return sign(signer, refund_sighash(refund, channel, SIGHASH_NONE_ANYONECANPAY), SIGHASH_NONE_ANYONECANPAY)


def verify_server_refund_signature(
    refund: Transaction, channel: ChannelScript, signature: bytes
) -> der.TxSignature:
    """v1 client, RETURN_REFUND checks 2-3 plus the signature itself: strict DER, low S, flags
    exactly ``0x82``, and valid for ``K_S`` over our refund. Raises the
    :mod:`~twisted_paychan.bitcoin.signatures` errors (all ``BAD_TRANSACTION``)."""
    digest = refund_sighash(refund, channel, SIGHASH_NONE_ANYONECANPAY)
    return verify_peer_signature(signature, channel.server_key, digest, SIGHASH_NONE_ANYONECANPAY)


def client_refund_signature(signer: ISigner, refund: Transaction, channel: ChannelScript) -> bytes:
    """The client's ``0x01`` (ALL) signature with ``K_C``, v1 and v2."""
    return sign(signer, refund_sighash(refund, channel, SIGHASH_ALL), SIGHASH_ALL)


def with_refund_script_sig(
    refund: Transaction,
    channel: ChannelScript,
    client_signature: bytes,
    server_signature: Optional[bytes] = None,
) -> Transaction:
    """The refund with its final scriptSig (v1 needs ``server_signature``, v2 must not have it)."""
    script_sig = refund_script_sig(channel, client_signature, server_signature)
    txin = refund.vin[0]
    return make_transaction(
        [tx_input(bytes(txin.prevout.hash), txin.prevout.n, txin.nSequence, script_sig)],
        list(refund.vout),
        lock_time=refund.nLockTime,
        version=refund.nVersion,
    )


def build_signed_refund(
    signer: ISigner,
    channel: ChannelScript,
    contract_txid: bytes,
    contract_value: int,
    *,
    fee: int = REFUND_FEE,
) -> Transaction:
    """v2: the complete refund, signed by the client alone (no server involvement)."""
    if channel.version != 2:
        raise ValueError("a v1 refund needs the server's signature first (server_refund_signature)")
    refund = build_refund(channel, contract_txid, contract_value, fee=fee)
    return with_refund_script_sig(refund, channel, client_refund_signature(signer, refund, channel))
