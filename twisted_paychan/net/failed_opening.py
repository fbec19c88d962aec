"""
What the client does when an opening fails after its contract left: find out whether the
contract reached a chain, and if it did not, take the coins back now.

The client stores its refund before the contract leaves (the money rule), so an opening that
fails later (the server's ERROR, a lost connection before CHANNEL_OPEN) leaves a stored OPEN
channel whose contract may or may not have been broadcast by the server. If the client's node
has the contract (in a block or its mempool), the channel stands: it may be resumed, and the
refund is there after expiry. If not, waiting for the expiry would lock the coins for the
channel's whole lifetime and then cost two fees; instead the wallet spends the contract's
inputs back to itself (``wallet/reclaim.py``), which also makes a late broadcast of the
contract impossible. Only a node's acceptance of that transaction ends the channel (FAILED,
``ClientLifecycle``'s ``OpeningFailed``); a node that cannot be asked leaves it OPEN with a
note, and the next start tries again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from twisted.logger import Logger

from twisted_paychan.chain.interfaces import IChain, IWallet
from twisted_paychan.chain.types import BroadcastRejected, TxState, display_hex, refusal
from twisted_paychan.channel.records import ClientChannelRecord
from twisted_paychan.wallet.reclaim import ReclaimImpossible

log = Logger()

#: How the note of an open record begins while its failed opening is not resolved yet.
OPENING_FAILED_NOTE = "opening failed"


class Outcome(enum.Enum):
    #: The node has the contract: the channel stands (resumable; refund after expiry).
    CONTRACT_KNOWN = "contract-known"
    #: The reclaim was taken: the coins are back.
    RECLAIMED = "reclaimed"
    #: Nothing could be decided now (the node could not be asked, or refused the reclaim).
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class FailedOpening:
    outcome: Outcome
    #: The reclaim transaction (RECLAIMED).
    reclaim_tx: Optional[bytes] = None
    detail: str = ""


async def resolve_failed_opening(wallet: IWallet, chain: IChain, record: ClientChannelRecord,
                                 fee_rate: int) -> FailedOpening:
    """Ask the node about the contract; if it does not know it, reclaim the coins."""
    txid = record.contract_txid
    try:
        status = await chain.tx_status(txid)
    except Exception as e:  # the node could not be asked: nothing is decided
        return FailedOpening(Outcome.UNDECIDED, detail=f"cannot ask the node about the contract: {e}")
    if status.state is not TxState.UNKNOWN:
        return FailedOpening(Outcome.CONTRACT_KNOWN, detail=f"the contract is {status.state.value}")
    try:
        reclaim = await wallet.reclaim(txid, fee_rate)
    except (ReclaimImpossible, KeyError) as e:
        return FailedOpening(Outcome.UNDECIDED, detail=str(e))
    try:
        await chain.broadcast(reclaim.tx)
    except BroadcastRejected as e:
        kind, why = refusal(e)
        # The contract beat it (a server's late broadcast), or no node answered: the coins
        # stay reserved for the reclaim, which a later start broadcasts again.
        return FailedOpening(Outcome.UNDECIDED, detail=f"reclaim {display_hex(reclaim.txid)} not taken "
                                                         f"({kind.value}: {why})")
    log.info("channel {txid}: opening failed and its contract never reached the node; coins reclaimed by "
             "{reclaim}", txid=display_hex(txid), reclaim=display_hex(reclaim.txid))
    return FailedOpening(Outcome.RECLAIMED, reclaim.tx)


__all__ = ["OPENING_FAILED_NOTE", "Outcome", "FailedOpening", "resolve_failed_opening"]
