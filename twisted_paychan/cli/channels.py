"""
``paychan channels --data-dir DIR [--json]``: the channels stored in a data directory, client
side and server side, with value, paid, expiry, state and the transaction that closed them.

It reads the store directly (``DATA_DIR/channels.sqlite``). The store allows one process at a
time, so while a server or client runs on that directory this says so instead of waiting.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.records import ClientChannelRecord, ServerChannelRecord
from twisted_paychan.cli.output import Output, UserError, format_sat
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.store.sqlite import StoreLocked, open_store


def _when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _closing(tx: Optional[bytes]) -> Optional[str]:
    return None if tx is None else display_hex(txid_of(tx))


def server_rows(records: Iterable[ServerChannelRecord]) -> list[dict[str, Any]]:
    return [
        {
            "side": "server",
            "contract_txid": display_hex(r.contract_txid),
            "version": r.version,
            "value": r.value,
            "paid": r.best_value,
            "expiry": r.expiry,
            "state": r.state.value,
            "closing_txid": _closing(r.settlement_tx),
            "note": r.note,
        }
        for r in records
    ]


def client_rows(records: Iterable[ClientChannelRecord]) -> list[dict[str, Any]]:
    return [
        {
            "side": "client",
            "contract_txid": display_hex(r.contract_txid),
            "server_id": r.server_id.hex(),
            "version": r.version,
            "value": r.value,
            "paid": r.value - r.client_change,
            "expiry": r.expiry,
            "state": r.state.value,
            "closing_txid": _closing(r.close_tx),
            "note": r.note,
        }
        for r in records
    ]


async def run_channels(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan channels needs --data-dir")
    if not (Path(args.data_dir) / "channels.sqlite").exists():
        raise UserError(f"no channel store in {args.data_dir}")
    try:
        store = open_store(args.data_dir)
    except StoreLocked:
        raise UserError(f"the channel store in {args.data_dir} is in use by a running paychan process") from None
    try:
        clients = ClientChannelManager(None, None, store, reactor)  # asked, not started: it only reads
        rows = server_rows(await store.server_channels()) + client_rows(await clients.list_channels())
    finally:
        await store.close()
    lines = [f"{len(rows)} channel(s)"]
    for r in rows:
        lines.append(
            f"{r['side']:6} {r['contract_txid']} v{r['version']} {r['state']:15} "
            f"value {format_sat(r['value'])}, paid {r['paid']} sat, expires {_when(r['expiry'])}"
        )
        if r["closing_txid"]:
            lines.append(f"       closed by {r['closing_txid']}")
        if r["note"]:
            lines.append(f"       {r['note']}")
    out.emit("\n".join(lines), {"channels": rows})
    return 0
