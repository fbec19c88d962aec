"""
What a server channel and the server itself look like in the API's JSON.

A channel row holds everything ``paychan channels --json`` shows for a server channel (the same
``cli.channels.server_rows`` row) and what only a running server knows: the peer address of the
connection holding it, the seconds left before expiry, the settlement's amounts and fee, and its
confirmations. Amounts are integers in satoshis; times are ISO-8601 UTC beside the Unix seconds.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

from twisted.internet import defer

from twisted_paychan.bitcoin.transactions import parse_transaction
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.interfaces import IChain
from twisted_paychan.chain.types import TxStatus, display_hex
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.cli.channels import server_rows
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.store.interfaces import ServerTotals

#: ``?state=`` values: the server's stored states, as ``paychan channels`` names them.
STATES = tuple(s.value for s in ServerChannelState)

JSON = dict[str, Any]


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def settlement_amounts(record: ServerChannelRecord) -> Optional[JSON]:
    """The stored settlement's txid, what it pays each side and its fee (None: none stored)."""
    if record.settlement_tx is None:
        return None
    to_client = record.value - record.best_value
    try:
        outputs = sum(int(out.nValue) for out in parse_transaction(record.settlement_tx).vout)
    except Exception:  # a record we cannot read must not hide the rest of the channel
        return {"txid": display_hex(txid_of(record.settlement_tx)), "to_server": None, "to_client": to_client, "fee": None}
    return {
        "txid": display_hex(txid_of(record.settlement_tx)),
        "to_server": outputs - to_client,
        "to_client": to_client,
        "fee": record.value - outputs,
    }


def channel_row(record: ServerChannelRecord, manager: ServerChannelManager, now: float,
                confirmations: Optional[int]) -> JSON:
    row: JSON = server_rows([record])[0]
    connection = manager.connection_of(record.contract_txid)
    row.update({
        "remaining": record.value - record.best_value,
        "peer": connection.peer if connection is not None else None,
        "connected": connection is not None,
        "expiry_iso": iso(record.expiry),
        "expires_in": int(record.expiry - now),
        "created_at": iso(record.created_at) if record.created_at else None,
        "updated_at": iso(record.updated_at) if record.updated_at else None,
        "settlement": settlement_amounts(record),
        "settlement_txid": row["closing_txid"],
        "confirmations": confirmations,
    })
    return row


async def confirmations_of(chain: IChain, record: ServerChannelRecord) -> Optional[int]:
    """The settlement's confirmations (None when none is stored or the chain cannot say)."""
    if record.settlement_tx is None:
        return None
    try:
        status: TxStatus = await defer.maybeDeferred(chain.tx_status, txid_of(record.settlement_tx))
    except Exception:
        return None
    return status.confirmations


async def channel_rows(records: list[ServerChannelRecord], manager: ServerChannelManager, now: float) -> list[JSON]:
    """The rows of ``records``; their settlements' confirmations asked for all at once (one
    round trip to the node's RPC for a page, not one after another)."""
    confirmations = await defer.gatherResults([defer.ensureDeferred(confirmations_of(manager.chain, r))
                                               for r in records])
    return [channel_row(r, manager, now, c) for r, c in zip(records, confirmations)]


def totals(t: ServerTotals) -> JSON:
    """Channels by state, value locked (open, settling or stuck: not yet on chain back to us),
    and what clients paid us in every channel stored: the store's aggregate (``server_totals``),
    never a read of every record."""
    by_state = {s: t.by_state.get(ServerChannelState(s), 0) for s in STATES}
    return {
        "channels": sum(by_state.values()),
        "channels_by_state": by_state,
        "value_locked": t.value_locked,
        "paid_to_us": t.paid_to_us,
    }
