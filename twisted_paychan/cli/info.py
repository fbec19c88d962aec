"""
``paychan info --data-dir DIR``: what a server holds and how it runs.

With the server running (its API on), its own answer (``GET /v1/info``): version, network, chain
tip, where it listens, uptime, connected clients, channels by state, value locked and what
clients paid it. With none running, what the channel store in the directory says (the same
totals; nothing about the chain or the server).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from twisted_paychan.api.views import totals
from twisted_paychan.cli import api_client
from twisted_paychan.cli.output import Output, UserError, format_sat
from twisted_paychan.cli.tables import table
from twisted_paychan.store.sqlite import StoreLocked, open_store


async def _offline(data_dir: str) -> dict[str, Any]:
    if not (Path(data_dir) / "channels.sqlite").exists():
        raise UserError(f"no server runs on {data_dir} and it holds no channel store")
    try:
        store = open_store(data_dir)
    except StoreLocked:
        raise UserError(f"the channel store in {data_dir} is in use by a paychan process without an API "
                        "(--api-listen none)") from None
    try:
        stored = await store.server_totals()
    finally:
        await store.close()
    return {"running": False, **totals(stored)}


def _human(info: dict[str, Any]) -> str:
    pairs: list[tuple[str, object]] = []
    if info["running"]:
        tip = info.get("chain_tip")
        pairs += [
            ("server", f"running, version {info['version']}, up {info['uptime']} s"),
            ("network", info["network"]),
            ("chain tip", f"{tip['height']} {tip['hash']} ({tip['time_iso']})" if tip else "unknown"),
            ("listening", ", ".join(info["listen"])),
            ("API", info["api"]),
            ("clients", info["connected_clients"]),
        ]
    else:
        pairs.append(("server", "not running (read from the channel store)"))
    by_state = ", ".join(f"{s} {n}" for s, n in info["channels_by_state"].items() if n) or "none"
    pairs += [
        ("channels", f"{info['channels']} ({by_state})"),
        ("value locked", format_sat(info["value_locked"])),
        ("paid to us", format_sat(info["paid_to_us"])),
    ]
    return "\n".join(table(["", ""], [(f"{k}:", v) for k, v in pairs])[1:])


async def run_info(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan info needs --data-dir (the server's data directory)")
    answer = await api_client.ask(reactor, args.data_dir, "GET", "/v1/info")
    info = {"running": True, **api_client.checked(answer)} if answer is not None else await _offline(args.data_dir)
    out.emit(_human(info), info)
    return 0
