"""
``paychan close --server ENDPOINT --data-dir DIR``: settle the client's open channels to a
server, without paying, and never open a new one.

Each open channel to that server (the server id is the endpoint string, or ``--server-id``)
is resumed and the server asked to settle; its settlement is stored when it comes. A channel
the server has already settled while the client was away is recorded as such (as ``paychan
pay`` does). When the server cannot be reached, or no longer knows the channel, nothing can
be settled now: the command says when the channel's refund becomes valid and that ``paychan
watch`` broadcasts it then, and exits 1.

The connection is made with a wallet that refuses to fund a contract: if the server refuses
the resume, the client would otherwise open a new channel in its place (§9.1), which is the
opposite of closing. ``paychan pay --settle --count 0`` does the same as this command.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
from pathlib import Path
from typing import Any, Optional, cast

from twisted.internet.error import ConnectError, DNSLookupError

from twisted_paychan import constants as C
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.interfaces import IWallet
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.client_lifecycle import refund_due_at
from twisted_paychan.channel.errors import ChannelClosed
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.net.client_channel import SettledOnChain
from twisted_paychan.net.client_manager import ClientChannelManager

#: Said by the wallet that will not fund: how a refused resume shows in the close reason.
_NO_NEW_CHANNEL = "closing opens no new channel"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, metavar="ENDPOINT", action="append",
                   help="the server the channels were opened with, as given to paychan pay (e.g. tcp:127.0.0.1:4242); "
                        "repeated (or a comma list) for servers that share one database: each channel is settled "
                        "through the first that answers")
    p.add_argument("--server-id", default=None,
                   help="string naming the server, if paychan pay was given one (default: the first endpoint)")


def iso(ts: int) -> str:
    """``2026-12-03T16:00:00Z``: a Unix time as a person and a log reader both read it."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def refund_note(record: ClientChannelRecord, data_dir: str) -> str:
    due = refund_due_at(record)
    return (f"its refund of {record.client_change:,} sat becomes valid at {iso(record.expiry)} ({record.expiry}); "
            f"`paychan watch --data-dir {data_dir}` broadcasts it from {iso(due)} ({due})")


async def close_channels(reactor: Any, args: argparse.Namespace, out: Output, wallet: IWallet,
                         manager: ClientChannelManager, server_id: bytes, endpoints: list[Any]) -> int:
    """Settle every open channel to ``server_id`` through the first of ``endpoints`` (those of
    ``args.servers``) that answers; the exit status (1 when one is left open)."""
    from twisted_paychan.cli.pay_checks import settled_while_away
    from twisted_paychan.net.client import connect

    away = await settled_while_away(reactor, manager, server_id, out)
    now = int(reactor.seconds())
    open_ = [r for r in await manager.list_channels()
             if r.server_id == server_id and r.state is ClientChannelState.OPEN]
    if not open_:
        word = "all settled" if away else "nothing to close"
        out.emit(f"{word}: no open channel to {args.server} in {args.data_dir}",
                 {"closed": [], "left_open": [], "settled_while_away": away})
        return 0
    from twisted_paychan.net.failover import FundsNothing

    closing = ClientChannelManager(cast(IWallet, FundsNothing(wallet, _NO_NEW_CHANNEL)), manager.chain, manager.store,
                                   reactor)
    closed: list[dict[str, Any]] = []
    left: list[dict[str, Any]] = []
    lines: list[str] = []
    try:
        for record in open_:
            txid = display_hex(record.contract_txid)
            why: Optional[str]
            if record.expiry - C.SERVER_SETTLE_OFFSET <= now:
                why = "it is too close to its expiry for the server to settle it"
                lines.append(f"channel {txid} left open: {why}; {refund_note(record, args.data_dir)}")
                left.append({"contract_txid": txid, "reason": why, "refund_valid_at": record.expiry})
                continue
            versions = VersionSelector.VERSION_2 if record.version == 2 else VersionSelector.VERSION_1
            settings = ClientSettings(channel_value=record.value, versions=versions)
            why = None
            unreachable: list[tuple[str, Exception]] = []
            conn = None
            for name, endpoint in zip(args.servers, endpoints):
                try:
                    conn = await connect(reactor, endpoint, wallet, manager.chain, manager.store, settings, server_id,
                                         None, manager=closing)
                    break
                except (ConnectError, ConnectionError, DNSLookupError) as e:
                    unreachable.append((name, e))
                except ChannelClosed as e:  # an answer: the servers share one database, the others say the same
                    if _NO_NEW_CHANNEL in e.detail:
                        why = f"the server at {name} refused to resume it (it no longer knows the channel)"
                    else:
                        why = f"the server at {name} closed the connection ({e})"
                    break
            if conn is None and why is None:
                if len(unreachable) == 1:
                    why = f"the server at {unreachable[0][0]} cannot be reached ({unreachable[0][1]})"
                else:
                    why = "no server can be reached: " + "; ".join(f"{n} ({problem})" for n, problem in unreachable)
            if why is not None or conn is None:
                lines.append(f"channel {txid} left open: {why}; {refund_note(record, args.data_dir)}")
                left.append({"contract_txid": txid, "reason": why, "refund_valid_at": record.expiry})
                continue
            if conn.contract_txid != record.contract_txid:  # another channel of this server came first
                conn.disconnect()
                await conn.channel.closed
                continue
            try:
                settlement = await conn.settle()
            except ChannelClosed as e:
                why = f"settlement failed ({e})"
                lines.append(f"channel {txid} left open: {why}; {refund_note(record, args.data_dir)}")
                left.append({"contract_txid": txid, "reason": why, "refund_valid_at": record.expiry})
                continue
            tx = settlement.tx if isinstance(settlement, SettledOnChain) else settlement
            latest = conn.record or record
            paid = latest.value - latest.client_change
            lines.append(f"channel {txid} settled by {display_hex(txid_of(tx))}: {paid:,} of {latest.value:,} sat "
                         f"paid, {latest.client_change:,} sat back to the wallet once it confirms")
            closed.append({"contract_txid": txid, "settlement_txid": display_hex(txid_of(tx)), "paid": paid,
                           "value": latest.value})
    finally:
        closing.stop()
    out.emit("\n".join(lines), {"closed": closed, "left_open": left, "settled_while_away": away})
    return 1 if left else 0


async def run_close(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    from twisted_paychan.cli.chains import open_chain, rpc_login
    from twisted_paychan.cli.pay import _server_endpoint, server_list
    from twisted_paychan.cli.wallet import WALLET_FILE, open_wallet
    from twisted_paychan.store.sqlite import StoreLocked, open_store

    if args.data_dir is None:
        raise UserError("paychan close needs --data-dir (the client's wallet and channels)")
    if not (Path(args.data_dir) / "channels.sqlite").exists():
        raise UserError(f"no channel store in {args.data_dir}: no channel was ever opened from it")
    args.servers = server_list(args.server)
    args.server = ",".join(args.servers)
    endpoints = [_server_endpoint(reactor, name) for name in args.servers]  # a malformed one fails first
    server_id = hashlib.sha256((args.server_id or args.servers[0]).encode()).digest()
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        wallet = open_wallet(Path(args.data_dir) / WALLET_FILE, access.chain, access.network, args.passphrase_file)
        try:
            try:
                store = open_store(args.data_dir, reactor)
            except StoreLocked:
                raise UserError(f"the channel store in {args.data_dir} is in use by another paychan process") from None
            manager = ClientChannelManager(wallet, access.chain, store, reactor)
            try:
                return await close_channels(reactor, args, out, wallet, manager, server_id, endpoints)
            finally:
                manager.stop()
                await store.close()
        finally:
            wallet.close()
    finally:
        await access.close()
