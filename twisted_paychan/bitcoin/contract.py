"""
The contract's channel output, and checking a contract we receive (PROTOCOL.md §4.6, §5 step 7,
§6 step 5).

The contract itself is funded and signed by a wallet elsewhere (``IWallet.fund``); what this
protocol fixes is its output 0: ``V`` locked in the channel script, at index 0. Both server
checks (v1: the multisig bytes; v2: P2SH of the redeem script built from the server's own ``E``)
come down to "output 0's script is byte for byte ours, and its value is positive".
"""

from __future__ import annotations

from typing import Any

from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.transactions import Transaction, check_transaction_sanity, tx_output
from twisted_paychan.constants import MAX_MONEY, P2PKH_DUST_LIMIT, P2SH_DUST_LIMIT, REFUND_FEE

__all__ = ["ContractError", "contract_output", "check_contract", "check_channel_value"]


class ContractError(ValueError):
    """The contract does not lock the channel as agreed (``BAD_TRANSACTION``)."""


def contract_output(channel: ChannelScript, value: int) -> Any:
    """Output 0 of the contract: ``value`` to the channel's scriptPubKey (``CTxOut``)."""
    if not 0 < value <= MAX_MONEY:
        raise ValueError(f"channel value {value} out of range")
    return tx_output(value, channel.script_pubkey)


def check_contract(contract: Transaction, channel: ChannelScript) -> int:
    """Server-side contract checks; return ``V`` (output 0's value).

    Runs bitcoinj's sanity check (raising
    :class:`~twisted_paychan.bitcoin.transactions.TransactionSanityError`), then requires output
    0's script to equal ``channel.script_pubkey`` byte for byte (this also catches swapped keys,
    a different ``E``, and a P2PKH/P2WPKH output carrying the right hash) and its value to be
    positive; raises :class:`ContractError` otherwise. The channel layer adds the recommended
    minimum-value check.
    """
    check_transaction_sanity(contract)
    out0 = contract.vout[0]
    if bytes(out0.scriptPubKey) != channel.script_pubkey:
        raise ContractError("contract output 0 does not pay to the channel script")
    if out0.nValue <= 0:
        raise ContractError("contract output 0 has no value")
    return int(out0.nValue)


def check_channel_value(version: int, value: int, refund_fee: int = REFUND_FEE) -> None:
    """The client's refusals before it builds a contract (§4.6): a v2 output below the P2SH
    dust limit (540), or a refund output ``V - refund_fee`` below the P2PKH dust limit (546).
    With the default fee the smallest channel is 1546 sat. Raises ValueError."""
    if version == 2 and value < P2SH_DUST_LIMIT:
        raise ValueError(f"channel value {value} is below the P2SH dust limit {P2SH_DUST_LIMIT}")
    if value - refund_fee < P2PKH_DUST_LIMIT:
        raise ValueError(f"refund output {value - refund_fee} would be dust (< {P2PKH_DUST_LIMIT})")
