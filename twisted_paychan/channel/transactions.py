"""
What the client builds and signs for its channel (§4.7, §7.2): the refund and each payment,
on top of the primitives in ``twisted_paychan.bitcoin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted_paychan import constants as C
from twisted_paychan.bitcoin import payment, refund
from twisted_paychan.bitcoin.contract import check_channel_value
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.transactions import parse_transaction, serialize


def channel_value_usable(version: int, value: int) -> bool:
    """The client refuses a channel whose refund or output would be dust (§4.6)."""
    try:
        check_channel_value(version, value)
    except ValueError:
        return False
    return True


def unsigned_refund(channel: ChannelScript, contract_txid: bytes, value: int) -> bytes:
    """The refund before anyone signed it: what PROVIDE_REFUND carries in v1."""
    return serialize(refund.build_refund(channel, contract_txid, value))


def sign_v2_refund(unsigned: bytes, channel: ChannelScript, signer: Any) -> bytes:
    """The v2 refund needs only the client's signature (the CLTV branch)."""
    tx = parse_transaction(unsigned)
    ours = refund.client_refund_signature(signer, tx, channel)
    return serialize(refund.with_refund_script_sig(tx, channel, ours))


@dataclass(frozen=True)
class SignedPayment:
    #: What this payment actually pays (more than asked when the change would be dust).
    amount: int
    #: c after it.
    client_change: int
    signature: bytes


def sign_payment(
    channel: ChannelScript, contract_txid: bytes, client_change: int, amount: int, signer: Any
) -> SignedPayment:
    """§7.2 steps 1–4: the new ``c``, rounded to 0 when the change would be dust."""
    if amount < 0 or amount > client_change:
        raise ValueError(f"cannot pay {amount} out of {client_change}")
    new_change = client_change - amount
    if 0 < new_change < C.P2PKH_DUST_LIMIT:
        amount, new_change = client_change, 0
    signature = payment.sign_payment(signer, channel, contract_txid, new_change)
    return SignedPayment(amount, new_change, signature)
