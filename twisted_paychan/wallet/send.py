"""
Withdrawing: pay an address from the wallet's coins, or sweep them all to it.

One function, :func:`send_coins`, for every front end (``paychan wallet send``, an HTTP API):
it checks the address against the wallet's network, lets the wallet select and sign (``fund``,
or ``sweep`` for everything), broadcasts, and gives the coins back to the wallet if the node
refuses the transaction, so a refused withdrawal never leaves money reserved. The errors a
person can fix are :class:`SendError` (bad address, bad amount) and
:class:`~twisted_paychan.chain.interfaces.InsufficientFunds` ("insufficient funds: need X sat,
have Y sat"), each one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from twisted_paychan.bitcoin.addresses import AddressError, address_to_script
from twisted_paychan.chain.interfaces import IChain, IWallet
from twisted_paychan.chain.types import FundedTransaction, display_hex
from twisted_paychan.constants import MAX_MONEY
from twisted_paychan.wallet.coinselect import dust_threshold

__all__ = ["SendError", "SendResult", "send_coins"]


class SendError(ValueError):
    """A withdrawal that cannot be made as asked (the address or the amount); one line."""


@dataclass(frozen=True)
class SendResult:
    """A withdrawal the node accepted into its mempool."""

    txid: bytes
    #: What the address receives, in sat.
    amount: int
    #: What the transaction pays the miners, in sat.
    fee: int
    address: str

    @property
    def txid_hex(self) -> str:
        return display_hex(self.txid)


def send_coins(
    wallet: IWallet, chain: IChain, address: str, amount: Optional[int], fee_rate: int
) -> defer.Deferred[SendResult]:
    """Pay ``amount`` sat (``None``: every spendable coin, less the fee) to ``address`` at
    ``fee_rate`` sat per 1000 virtual bytes, and broadcast it. Fails with :class:`SendError`
    or ``InsufficientFunds`` before anything is signed, or with the node's refusal (the coins
    are then given back to the wallet)."""
    return defer.maybeDeferred(_fund, wallet, address, amount, fee_rate).addCallback(
        _broadcast, wallet, chain, address
    )


def _fund(wallet: IWallet, address: str, amount: Optional[int], fee_rate: int) -> defer.Deferred[FundedTransaction]:
    address = address.strip()
    try:
        script = address_to_script(address, wallet.network)
    except AddressError as e:
        raise SendError(f"bad address {address!r}: {e}") from None
    if amount is None:
        return wallet.sweep(script, fee_rate)
    if not 0 < amount <= MAX_MONEY:
        raise SendError(f"the amount must be between 1 and {MAX_MONEY} sat, not {amount}")
    if amount < dust_threshold(script):
        raise SendError(f"{amount} sat is below the dust limit ({dust_threshold(script)} sat) for {address}")
    return wallet.fund(script, amount, fee_rate)


def _broadcast(
    funded: FundedTransaction, wallet: IWallet, chain: IChain, address: str
) -> defer.Deferred[SendResult]:
    def accepted(_: object) -> SendResult:
        return SendResult(funded.txid, _paid(funded), funded.fee, address)

    def refused(f: Failure) -> Failure:
        # Not in any mempool, so never spendable by anyone: safe to give the coins back.
        wallet.release(funded)
        return f

    d: defer.Deferred[object] = defer.maybeDeferred(chain.broadcast, funded.tx)
    return d.addCallbacks(accepted, refused)


def _paid(funded: FundedTransaction) -> int:
    from bitcoin.core import CTransaction

    return int(CTransaction.deserialize(funded.tx).vout[0].nValue)
