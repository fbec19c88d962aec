"""
``paychan settle --data-dir DIR (CONTRACT_TXID | --all)``: settle stored server channels now.

With the server running, the request goes to it through its HTTP API (``DATA_DIR/api.json``),
or its operator socket (``DATA_DIR/admin.sock``) when its API is off, and a connected client
gets CLOSE with the settlement. With the server stopped,
the command opens the data directory itself (chain, wallet, store) and settles from there.
Either way the settlement is stored before it is broadcast, and a channel that cannot be
settled (fee above what it pays the server, broadcast refused) is kept as ``stuck`` with the
reason, shown by ``paychan channels``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineOnlyReceiver

from twisted_paychan.cli import api_client
from twisted_paychan.cli.chains import open_chain, rpc_login
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.cli.wallet import WALLET_FILE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contract", nargs="?", metavar="CONTRACT_TXID", help="the channel's contract txid")
    p.add_argument("--all", action="store_true", help="every open or stuck channel")


class _Ask(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, request: dict[str, str]) -> None:
        self.request = request
        self.answer: Deferred[dict[str, Any]] = Deferred()

    def connectionMade(self) -> None:
        LineOnlyReceiver.sendLine(self, json.dumps(self.request).encode())

    def lineReceived(self, line: bytes) -> None:
        if not self.answer.called:
            self.answer.callback(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.answer.called:
            self.answer.errback(UserError("the server closed the operator socket without answering"))


async def run_settle(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan settle needs --data-dir (the server's data directory)")
    if bool(args.contract) == bool(args.all):
        raise UserError("name one CONTRACT_TXID or give --all")
    which = "all" if args.all else args.contract
    if not args.all:
        from twisted_paychan.chain.types import from_display_hex

        try:
            from_display_hex(which)
        except ValueError:
            raise UserError(f"{which!r} is not a contract txid (64 hex digits, as paychan channels shows them)") from None
    socket_path = Path(args.data_dir) / "admin.sock"
    path = "/v1/channels/settle-all" if args.all else f"/v1/channels/{quote(args.contract, safe='')}/settle"
    through_api = await api_client.ask(reactor, args.data_dir, "POST", path)
    if through_api is not None:
        results = _api_results(through_api, None if args.all else args.contract)
        where = "by the running server"
    elif socket_path.exists():
        try:
            ask = _Ask({"command": "settle", "contract": which})
            await connectProtocol(UNIXClientEndpoint(reactor, str(socket_path)), ask)
            answer = await ask.answer
        except (ConnectionError, OSError) as e:
            raise UserError(f"cannot reach the server at {socket_path}: {e}") from None
        if "error" in answer:
            raise UserError(answer["error"])
        results = answer["results"]
        where = "by the running server"
        _unknown(results, args)
    else:
        results = await _settle_offline(reactor, args, which)
        where = "from the data directory (server not running)"
    lines = [f"{len(results)} channel(s) {where}"]
    for r in results:
        outcome = f"settled by {r['settlement_txid']}" if r["settlement_txid"] else f"NOT settled: {r['error']}"
        lines.append(f"  {r['contract_txid']}: {outcome}")
    out.emit("\n".join(lines), {"results": results})
    return 0 if all(r["settlement_txid"] for r in results) else 1


def _api_results(answer: tuple[int, Any], contract: Optional[str]) -> list[dict[str, Any]]:
    """The results of a settle through the API: a 409 for a channel that could not be settled
    carries its result row, a 404 is a ``contract`` the server does not store, any other error
    is the user's."""
    status, body = answer
    if status == 404 and contract is not None:
        raise UserError(f"the server stores no channel {contract}: `paychan channels` lists the channels")
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        results: list[dict[str, Any]] = body["results"]
        return results
    return list(api_client.checked(answer)["results"])


async def _settle_offline(reactor: Any, args: argparse.Namespace, which: str) -> list[dict[str, Any]]:
    from twisted_paychan.channel.settings import ServerSettings
    from twisted_paychan.net.admin import settle_channels
    from twisted_paychan.net.server_manager import ServerChannelManager
    from twisted_paychan.cli.wallet import open_wallet

    if not (Path(args.data_dir) / "channels.sqlite").exists():
        raise UserError(f"no channel store in {args.data_dir}")
    await _check_stored(args, which)
    if not (Path(args.data_dir) / WALLET_FILE).exists():
        # Not made here: a new wallet would hold none of the channels' keys (a server on --wallet
        # signer: or memory keeps none in its directory).
        raise UserError(f"no wallet in {args.data_dir} to sign with: a server whose keys are elsewhere "
                        "(--wallet signer:..., memory) settles while it runs (start it, then paychan settle)")
    if args.chain == "embedded" and not (Path(args.data_dir) / "chain").exists():
        raise UserError(f"{args.data_dir} holds no embedded chain: give the --chain URL (and --rpc-cookie) of the "
                        "node the server uses")
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        wallet = open_wallet(os.path.join(args.data_dir, WALLET_FILE), access.chain, access.network, args.passphrase_file)
        try:
            store = _open_offline(args.data_dir)
            try:
                manager = ServerChannelManager(wallet, access.chain, store, ServerSettings(fee_rate=args.fee_rate),
                                               reactor)
                try:
                    return await settle_channels(manager, which)
                finally:
                    manager.stop()
            finally:
                await store.close()
        finally:
            wallet.close()
    finally:
        await access.close()


def _unknown(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """One channel asked for and the server does not know it: one line, not a table."""
    if len(results) == 1 and not args.all and results[0]["settlement_txid"] is None and \
            "no channel with that contract txid" in (results[0]["error"] or ""):
        raise UserError(f"the server stores no channel {args.contract}: `paychan channels` lists the channels "
                        "(with the server stopped)")


async def _check_stored(args: argparse.Namespace, which: str) -> None:
    """Before a chain is opened: the channel asked for is one of this data directory's server
    channels (a client's channel is closed with ``paychan close``)."""
    from twisted_paychan.chain.types import display_hex

    store = _open_offline(args.data_dir)
    try:
        servers = {display_hex(r.contract_txid) for r in await store.server_channels()}
        clients = {display_hex(r.contract_txid) for r in await store.client_channels()}
    finally:
        await store.close()
    close_it = (f"paychan settle is the server's command; a client closes its channel with "
                f"`paychan close --server ENDPOINT --data-dir {args.data_dir}`")
    if which == "all":
        if not servers and clients:
            raise UserError(f"{args.data_dir} holds client channels only: {close_it}")
        return
    if which.lower() in clients:
        raise UserError(f"{which} is a client channel (this data directory paid it): {close_it}")
    if which.lower() not in servers:
        raise UserError(f"no server channel {which} in {args.data_dir}: `paychan channels --data-dir "
                        f"{args.data_dir}` lists them")


def _open_offline(data_dir: str) -> Any:
    """The server's channel store, opened here because no server answered; in use means a
    server runs without its operator socket."""
    from twisted_paychan.store.sqlite import StoreLocked, open_store

    try:
        return open_store(data_dir)
    except StoreLocked:
        raise UserError(f"the channel store in {data_dir} is in use, but no operator socket "
                        "answers: is the server running with --admin-listen none?") from None
