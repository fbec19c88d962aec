"""
Spending a contract's inputs back to our own wallet, after an opening that failed.

When a channel's opening fails after the contract left the client, and the contract is on no
chain and in no mempool, the client's coins would stay locked until the refund's expiry (and
then cost two fees: the contract and the refund). Spending the same inputs to ourselves frees
them now and makes a late broadcast of the contract impossible: the contract and this
transaction conflict, and this one pays more than the contract's fee plus its own relay, so
that under Bitcoin Core's replacement rules the contract can never replace it.
"""

from __future__ import annotations

from typing import Sequence

from twisted_paychan.chain.types import FundedTransaction
from twisted_paychan.constants import DEFAULT_MIN_RELAY_TX_FEE
from twisted_paychan.wallet.coinselect import fee_for_weight
from twisted_paychan.wallet.txbuild import SpendableCoin, build_funding_transaction

#: Signatures vary by a byte or two between signings: the fee is figured on a trial signing.
_SIGNATURE_SLACK = 4


class ReclaimImpossible(Exception):
    """The coins cannot be spent back (already spent, or worth less than the fee)."""


def reclaim_fee(weight: int, fee_rate: int, contract_fee: int) -> int:
    """At the fee rate, and above the contract's fee by its own relay at the minimum rate, so
    that the contract can never replace it (Core's rules 3 and 4)."""
    relay = fee_for_weight(weight, DEFAULT_MIN_RELAY_TX_FEE)
    return max(fee_for_weight(weight, fee_rate), contract_fee + relay) + _SIGNATURE_SLACK


def build_reclaim(coins: Sequence[SpendableCoin], script_pubkey: bytes, fee_rate: int,
                  contract_fee: int) -> FundedTransaction:
    """All of ``coins`` to ``script_pubkey`` in one output, less :func:`reclaim_fee`."""
    total = sum(c.utxo.value for c in coins)
    try:
        trial = build_funding_transaction(coins, total // 2, script_pubkey, None, fee_rate)
        weight = len(trial.tx) * 4  # an upper bound (witness bytes count once): never too cheap
        fee = reclaim_fee(weight, fee_rate, contract_fee)
        return build_funding_transaction(coins, total - fee, script_pubkey, None, fee_rate)
    except ValueError as e:
        raise ReclaimImpossible(f"the contract's inputs ({total} sat) cannot pay the fee: {e}") from None


__all__ = ["ReclaimImpossible", "build_reclaim", "reclaim_fee"]
