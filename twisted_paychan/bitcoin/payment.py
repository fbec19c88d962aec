"""
Payments: the signature the client sends at every update, and the server's check of it
(PROTOCOL.md §4.8, §7.2 step 4, §7.3 checks 1, 6, 7).

A payment is never a complete transaction on the wire, only the client's signature over this
one: version 1; input 0 = contract:0 with sequence ``0xFFFFFFFF``; output 0 = ``c`` to
P2PKH(``K_C``) if ``c > 0`` (no output at all when ``c = 0``); nLockTime 0. The flags are
SINGLE|ANYONECANPAY (``0x83``) while ``c > 0`` and NONE|ANYONECANPAY (``0x82``) at ``c = 0``,
which let the server add its own output (and inputs) and complete it as the settlement.

Both sides go through the fast :func:`~twisted_paychan.bitcoin.sighash.payment_sighash`; the
server's check is one call, :func:`verify_payment_signature`.
"""

from __future__ import annotations

from twisted_paychan.bitcoin import der
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.sighash import payment_sighash, payment_sighash_type
from twisted_paychan.bitcoin.signatures import sign, verify_peer_signature
from twisted_paychan.bitcoin.transactions import Transaction, make_transaction, tx_input, tx_output
from twisted_paychan.chain.interfaces import ISigner
from twisted_paychan.constants import FINAL_SEQUENCE, TX_VERSION

__all__ = ["build_payment", "payment_digest", "sign_payment", "verify_payment_signature"]


def build_payment(channel: ChannelScript, contract_txid: bytes, client_change_value: int) -> Transaction:
    """The unsigned payment transaction for ``c`` (no output when ``c = 0``, as the server
    rebuilds it; bitcoinj's client keeps a 0-value output locally, which NONE ignores)."""
    if client_change_value < 0:
        raise ValueError(f"negative client change {client_change_value}")
    outputs = []
    if client_change_value > 0:
        outputs.append(tx_output(client_change_value, channel.client_change_script))
    inputs = [tx_input(contract_txid, 0, FINAL_SEQUENCE)]
    return make_transaction(inputs, outputs, lock_time=0, version=TX_VERSION)


def payment_digest(channel: ChannelScript, contract_txid: bytes, client_change_value: int) -> bytes:
    """The sighash a payment leaving the client ``c`` signs (flags from ``c``)."""
    return payment_sighash(
        contract_txid, channel.script_code, client_change_value, channel.client_change_script
    )


def sign_payment(
    signer: ISigner, channel: ChannelScript, contract_txid: bytes, client_change_value: int
) -> bytes:
    """The client's UPDATE_PAYMENT signature (DER + ``0x83``, or ``0x82`` at ``c = 0``)."""
    digest = payment_digest(channel, contract_txid, client_change_value)
    return sign(signer, digest, payment_sighash_type(client_change_value))


def verify_payment_signature(
    channel: ChannelScript,
    contract_txid: bytes,
    client_change_value: int,
    signature: bytes,
) -> der.TxSignature:
    """The server's signature checks for a payment leaving the client ``c`` (§7.3 checks 1, 6
    and 7; checks 2-5 on the amounts and the contract are the channel layer's).

    Raises :class:`~twisted_paychan.bitcoin.signatures.BadSignatureEncoding` (high S included),
    :class:`~twisted_paychan.bitcoin.signatures.WrongSighashType` or
    :class:`~twisted_paychan.bitcoin.signatures.SignatureDoesNotVerify`.
    """
    digest = payment_digest(channel, contract_txid, client_change_value)
    allowed = payment_sighash_type(client_change_value)
    return verify_peer_signature(signature, channel.client_key, digest, allowed)
