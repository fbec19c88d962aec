"""
What the signer agrees to sign, as pure checks: each takes the request and the figures the
ledger holds and returns what the signature needs, or raises :class:`~.protocol.Refused` with
the reason (which the signer logs and the server sees).

- A **settlement** spends output 0 of the contract it is given (the signer builds it, so it
  spends nothing else), which must pay this channel's script with a channel key of the signer's;
  it leaves the client the change ``c`` of a payment the client signed (checked against the
  client key), so the server gets ``b = V - c``, never less than the best ``b`` the signer was
  ever shown for that contract, minus a fee at no more than the configured highest rate; its
  payout script is the signer's own, chosen by the signer.
- A **v1 refund** (NONE|ANYONECANPAY, so the signature commits to the contract outpoint, the
  sequence and the lock time, not to the outputs): once per channel key, one input spending
  output 0, a non-final sequence, the lock time the channel's expiry, which must lie at least
  :data:`MIN_REFUND_DELAY` ahead.
- A **funding** spends only P2WPKH coins of the signer's (their signatures commit to the value,
  so a wrong value claimed by the server only makes the transaction invalid), and what leaves
  the wallet (to a script not its own, plus the fee) stays within the daily limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from twisted_paychan.bitcoin.contract import check_contract
from twisted_paychan.bitcoin.payment import verify_payment_signature
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.signatures import PeerSignatureError
from twisted_paychan.bitcoin.transactions import Transaction, parse_transaction
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex
from twisted_paychan.constants import FINAL_SEQUENCE
from twisted_paychan.signer.protocol import Refused

#: A v1 refund is signed only for an expiry at least this far ahead: the server's own shortest
#: time window is two hours (HARD_MIN_TIME_WINDOW); one hour leaves room for slow handshakes.
MIN_REFUND_DELAY = 3600


@dataclass(frozen=True)
class SettlementTerms:
    channel: ChannelScript
    contract_txid: bytes
    value: int
    best_value: int


def settlement(version: int, contract: bytes, client_key: bytes, server_key: bytes, expiry: int,
               client_change: int, client_signature: bytes, rates: list[int], channel_keys: set[bytes],
               best_seen: Any, max_fee_rate: int) -> SettlementTerms:
    """Check a settlement request; ``best_seen(contract_txid)`` is the ledger's best ``b``."""
    if version not in (1, 2):
        raise Refused(f"no channel version {version}")
    if server_key not in channel_keys:
        raise Refused(f"the server key {server_key.hex()} is not a channel key this signer handed out")
    if not rates:
        raise Refused("no fee rate given")
    too_high = [r for r in rates if r > max_fee_rate]
    if too_high:
        raise Refused(f"fee rate {max(too_high)} sat/kB is above the signer's highest ({max_fee_rate})")
    try:
        channel = ChannelScript(version, client_key, server_key, expiry)
        tx = parse_transaction(contract)
        value = check_contract(tx, channel)
    except ValueError as e:
        raise Refused(f"the transaction given does not pay this channel's contract output: {e}") from None
    contract_txid = txid_of(tx)
    if not 0 <= client_change <= value:
        raise Refused(f"client change {client_change} is outside the channel's value {value}")
    try:
        verify_payment_signature(channel, contract_txid, client_change, client_signature)
    except PeerSignatureError as e:
        raise Refused(f"the client's signature on change {client_change} does not verify: {e}") from None
    best_value = value - client_change
    seen: int = best_seen(contract_txid)
    if best_value < seen:
        raise Refused(f"channel {display_hex(contract_txid)}: pays the server {best_value} sat, less than the best "
                      f"payment it was shown ({seen} sat)")
    return SettlementTerms(channel, contract_txid, value, best_value)


def refund(client_key: bytes, server_key: bytes, expiry: int, raw: bytes, channel_keys: set[bytes],
           signed_before: Optional[bytes], now: int) -> tuple[ChannelScript, Transaction, bytes]:
    """Check a v1 refund request: (channel, refund, the contract txid it spends)."""
    if server_key not in channel_keys:
        raise Refused(f"the server key {server_key.hex()} is not a channel key this signer handed out")
    if signed_before is not None:
        raise Refused(f"a refund with key {server_key.hex()} was signed already (contract "
                      f"{display_hex(signed_before)})")
    try:
        tx = parse_transaction(raw)
        channel = ChannelScript(1, client_key, server_key)
    except ValueError as e:
        raise Refused(f"not a refund: {e}") from None
    if len(tx.vin) != 1 or tx.vin[0].prevout.n != 0:
        raise Refused("a refund has one input, spending a contract's output 0")
    if tx.vin[0].nSequence == FINAL_SEQUENCE:
        raise Refused("the refund's sequence is final, so its lock time would not hold")
    if tx.nLockTime != expiry:
        raise Refused(f"the refund's lock time {tx.nLockTime} is not the channel's expiry {expiry}")
    if expiry < now + MIN_REFUND_DELAY:
        raise Refused(f"the refund's lock time {expiry} is less than {MIN_REFUND_DELAY} s ahead")
    return channel, tx, bytes(tx.vin[0].prevout.hash)


def within_daily_limit(outflow: int, spent_today: int, limit: int) -> None:
    if spent_today + outflow > limit:
        raise Refused(f"spending {outflow} sat would pass the daily limit of {limit} sat ({spent_today} sat "
                      f"spent in the last 24 hours)")
