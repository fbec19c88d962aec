"""
``paychan channels --data-dir DIR [--state STATE ...] [--count] [--json]``: the channels stored
in a data directory, client side and server side, with value, paid, expiry, state and the
transaction that closed them, and how many there are in each state. ``--state`` shows only
channels in the states named (a server may hold many contract-failed channels until they are
pruned: issue #14 item 3); ``--count`` shows only the counts.

With a server running on that directory (its API on: ``DATA_DIR/api.json``), it asks the
server, whose rows say more (peer, seconds left, settlement amounts, confirmations). Otherwise it
reads the store directly (``DATA_DIR/channels.sqlite``); the store allows one process at a time,
so while a process without an API holds it this says so instead of waiting.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)
from twisted_paychan.cli import api_client
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.cli.tables import table
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.store.sqlite import StoreLocked, open_store


#: Every state either side stores, as ``paychan channels`` shows them.
STATES = sorted({s.value for s in ServerChannelState} | {s.value for s in ClientChannelState})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", action="append", choices=STATES, metavar="STATE",
                        help=f"show only channels in this state (repeatable; one of {', '.join(STATES)})")
    parser.add_argument("--count", action="store_true", help="show only how many channels are in each state")


def counts_by_state(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{side: {state: n}}``, sides and states in a stable order."""
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        side = counts.setdefault(r["side"], {})
        side[r["state"]] = side.get(r["state"], 0) + 1
    return {side: dict(sorted(states.items())) for side, states in sorted(counts.items())}


async def _stored_rows(reactor: Any, data_dir: str) -> list[dict[str, Any]]:
    """The rows read from the store itself (no server with an API runs on ``data_dir``)."""
    if not (Path(data_dir) / "channels.sqlite").exists():
        raise UserError(f"no channel store in {data_dir}")
    try:
        store = open_store(data_dir)
    except StoreLocked:
        raise UserError(f"the channel store in {data_dir} is in use by a running paychan process") from None
    try:
        clients = ClientChannelManager(None, None, store, reactor)  # asked, not started: it only reads
        return server_rows(await store.server_channels()) + client_rows(await clients.list_channels())
    finally:
        await store.close()


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """One aligned line per channel (a running server's rows add the peer), then what closed it
    and its note on lines of their own."""
    if not rows:
        return []
    live = any("peer" in r for r in rows)
    headers = ["SIDE", "CONTRACT", "V", "STATE", "VALUE", "PAID", "REMAINING", "EXPIRES"] + (["PEER"] if live else [])
    cells = [[r["side"], r["contract_txid"], f"v{r['version']}", r["state"], r["value"], r["paid"],
              r["value"] - r["paid"], _when(r["expiry"])] + ([r.get("peer")] if live else []) for r in rows]
    lines = []
    head, *body = table(headers, cells, right=(4, 5, 6))
    lines.append(head)
    for r, line in zip(rows, body):
        lines.append(line)
        if r["closing_txid"]:
            lines.append(f"       closed by {r['closing_txid']}")
        if r["note"]:
            lines.append(f"       {r['note']}")
    return lines


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
    answer = await api_client.ask(reactor, args.data_dir, "GET", "/v1/channels")
    rows = api_client.checked(answer)["channels"] if answer is not None else await _stored_rows(reactor, args.data_dir)
    counts = counts_by_state(rows)
    wanted = getattr(args, "state", None)
    shown = rows if not wanted else [r for r in rows if r["state"] in wanted]
    if wanted:
        lines = [f"{len(shown)} channel(s) {' or '.join(wanted)}, of {len(rows)}"]
    else:
        lines = [f"{len(rows)} channel(s)"]
    if answer is not None:
        lines[0] += ", from the running server"
    if rows:
        lines.append("by state: " + "; ".join(
            f"{side} " + ", ".join(f"{state} {n}" for state, n in states.items()) for side, states in counts.items()))
    if getattr(args, "count", False):
        shown = []
    lines += _table(shown)
    out.emit("\n".join(lines), {"channels": shown, "counts": counts})
    return 0
