"""
``paychan pay``: open (or resume) a channel to a server and pay it.

    paychan pay --server ENDPOINT[,ENDPOINT...] --chain URL --data-dir DIR --value SATS --amount SATS
                --count N [--version 1|2|2or1] [--info HEX] [--settle | --keep-open]
                [--settlement-wait SECONDS]

The client's wallet and channel store live in ``DATA_DIR`` (fund the wallet first, e.g. with
``paychan wallet new-address`` and ``paychan regtest-fund``). Progress goes to stderr; the
summary to stdout (``--json`` for machines). ``--keep-open`` (the default) disconnects without
settling, so the next ``paychan pay`` resumes the same channel; ``--settle`` asks the server to
settle and waits for the settlement (from its CLOSE, or from the chain when the server only
closes the socket, as stock bitcoinj does).

A payment that leaves no change exhausts the channel: it counts as paid even when the server
closes without acknowledging it (stock bitcoinj, §7.3 step 4), and the server settles by itself.
``pay`` then waits up to ``--settlement-wait`` seconds (``ClientSettings.settlement_wait``,
default 60) for that settlement, from the server's CLOSE or the chain, and reports it; if it has
not appeared, ``pay`` still succeeds and the stored channel stays open with a note until
``paychan watch`` sees the settlement (or refunds the channel after its expiry).

Before it locks money, ``pay`` checks what it can (``cli.pay_checks``): the amounts against
``--value``, a stored channel the server settled while the client was away (recorded, said),
and the wallet's balance; a channel too small for the payments asked for pays none of them.
SIGINT and SIGTERM stop it between two payments (``cli.stopping``): the channel stays stored
for a resume, one line says what was paid, and the exit status is 130 or 143.

Several ``--server`` (repeated, or a comma list) are servers that share one database: when the
connection drops, the channel is resumed on the next (``net/failover``, ``doc/cluster.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, DNSLookupError

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.errors import ChannelClosed, ChannelUsageError
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.cli.chains import open_chain, rpc_login
from twisted_paychan.secretfiles import private_directory
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.cli.wallet import WALLET_FILE
from twisted_paychan.net.client import connect
from twisted_paychan.net.client_channel import ClientChannel, Settlement, SettledOnChain
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.net.failover import AllEndpointsFailed, FailoverConnection
from twisted_paychan.store.sqlite import StoreLocked, open_store
from twisted_paychan.cli.tls import TlsClientEndpoint, parse_tls
from twisted_paychan.cli.wallet import open_wallet
from twisted_paychan.cli.window import pipelined_payments

_VERSIONS = {"1": VersionSelector.VERSION_1, "2": VersionSelector.VERSION_2, "2or1": VersionSelector.VERSION_2_ALLOW_1}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Resume the stored channel to --server, or open a new one of --value satoshis, and make --count payments "
        "of --amount. A new channel starts with an initial payment the server requires (its --min-payment, "
        "1,000 sat by default), said as the channel opens: 'channel opened: 1,000,000 sat locked, 1,000 sat "
        "initial payment required by the server'.")
    p.epilog = (
        "Ctrl-C or SIGTERM stops between two payments (exit 130 or 143): the channel is kept, and the next "
        "paychan pay resumes it. paychan close (or pay --settle --count 0) settles without paying.")
    p.add_argument("--server", required=True, metavar="ENDPOINT", action="append",
                   help="e.g. tcp:127.0.0.1:4242, or tls:HOST:PORT[:trustRoots=CA_DIR] (the certificate is verified); "
                        "repeated (or a comma list) for servers that share one database: a dropped connection "
                        "resumes the channel on the next one")
    p.add_argument("--value", type=int, required=True, metavar="SATS",
                   help="value to lock in a new channel (the server's minimum channel value applies); the "
                        "server takes an initial payment from it at once (twistd paychan --min-payment, "
                        "1,000 sat by default), so the channel can pay VALUE minus that")
    p.add_argument("--amount", type=int, required=True, metavar="SATS", help="size of each payment")
    p.add_argument("--count", type=int, default=1, metavar="N", help="number of payments (default 1)")
    p.add_argument("--window", type=int, default=1, metavar="W",
                   help="payments in flight at once (default 1, as bitcoinj's client; up to 256)")
    p.add_argument("--version", choices=sorted(_VERSIONS), default="2or1")
    p.add_argument("--info", metavar="HEX", help="info bytes sent with each payment")
    p.add_argument("--fee-rate", type=int, default=1000, metavar="SAT_PER_KB", help="contract fee rate")
    p.add_argument("--server-id", default=None, help="string naming the server (default: the endpoint)")
    p.add_argument("--settlement-wait", type=float, default=None, metavar="SECONDS",
                   help="after a payment exhausts the channel, how long to wait for the server's "
                        "settlement (default 60)")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--settle", action="store_true", help="settle the channel after paying")
    end.add_argument("--keep-open", action="store_true", help="keep the channel for later (default)")


async def run_pay(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan pay needs --data-dir (the client's wallet and channels)")
    if args.amount < 0 or args.count < 0 or args.value <= 0:
        raise UserError("--value must be positive, --amount and --count not negative")
    from twisted_paychan.cli.pay_checks import check_arguments

    check_arguments(args)
    args.servers = server_list(args.server)
    args.server = ",".join(args.servers)
    _server_endpoints(reactor, args.servers)  # a malformed --server fails before anything is opened
    try:
        info = bytes.fromhex(args.info) if args.info else None
    except ValueError:
        raise UserError("--info must be hex") from None
    try:
        wait = {} if args.settlement_wait is None else {"settlement_wait": args.settlement_wait}
        settings = ClientSettings(channel_value=args.value, versions=_VERSIONS[args.version], fee_rate=args.fee_rate,
                                  max_in_flight=args.window, **wait)
    except ValueError as e:
        raise UserError(str(e)) from None
    private_directory(args.data_dir)
    server_id = hashlib.sha256((args.server_id or args.servers[0]).encode()).digest()
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        wallet = open_wallet(Path(args.data_dir) / WALLET_FILE, access.chain, access.network, args.passphrase_file)
        try:
            store = open_store(args.data_dir, reactor)
        except StoreLocked:
            wallet.close()
            raise UserError(f"the channel store in {args.data_dir} is in use by another paychan process") from None
        try:
            return await _pay(reactor, args, out, wallet, access.chain, store, settings, server_id, info)
        finally:
            await store.close()
            wallet.close()
    finally:
        await access.close()


async def _pay(reactor: Any, args: Any, out: Output, wallet: Any, chain: Any, store: Any,
               settings: ClientSettings, server_id: bytes, info: Any) -> int:
    manager = ClientChannelManager(wallet, chain, store, reactor)
    try:
        return await _pay_with(reactor, args, out, manager, settings, server_id, info)
    finally:
        manager.stop()


def _server_endpoint(reactor: Any, description: str) -> Any:
    """The client endpoint ``--server`` names (Twisted's endpoint strings: ``tcp:HOST:PORT``,
    ``unix:PATH``; ``tls:HOST:PORT[:trustRoots=PATH]`` is ours, see ``cli.tls``)."""
    try:
        if description.startswith("tls:"):
            return parse_tls(reactor, description)
        return clientFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        from twisted_paychan.cli.errors import endpoint_problem

        raise endpoint_problem("--server", description, e) from None


def server_list(given: Union[str, list[str]]) -> list[str]:
    """The endpoints of ``--server``, repeated or comma-separated, in the order given."""
    items = [given] if isinstance(given, str) else given
    servers = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not servers:
        raise UserError("--server needs an endpoint, e.g. tcp:127.0.0.1:4242")
    return servers


def _server_endpoints(reactor: Any, servers: list[str]) -> Any:
    """One endpoint, or (several ``--server``) a list of them named as given, which ``connect``
    fails over (``net/failover``)."""
    if len(servers) == 1:
        return _server_endpoint(reactor, servers[0])
    from twisted_paychan.net.failover import NamedEndpoint

    return [NamedEndpoint(_server_endpoint(reactor, server), server) for server in servers]


async def _after_failed_opening(manager: ClientChannelManager) -> str:
    """What became of a contract that left before the opening failed (``net/failed_opening``)."""
    from twisted_paychan.net.failed_opening import Outcome

    said = ""
    try:
        results = await manager.failed_openings()
    except Exception as e:  # the opening's own failure is what the person must read first
        return f"; what became of its contract is unknown ({e}): see paychan channels"
    for result in results:
        if result.outcome is Outcome.RECLAIMED and result.reclaim_tx is not None:
            said += f"; the contract never reached the chain: coins reclaimed by {display_hex(txid_of(result.reclaim_tx))}"
        elif result.outcome is Outcome.CONTRACT_KNOWN:
            said += f"; {result.detail}: the channel stands (paychan channels)"
        else:
            said += f"; {result.detail}: the channel stays open, its refund due after expiry"
    return said


async def _pay_with(reactor: Any, args: Any, out: Output, manager: ClientChannelManager,
                    settings: ClientSettings, server_id: bytes, info: Any) -> int:
    from twisted_paychan.cli import pay_checks
    from twisted_paychan.cli.stopping import StopRequest

    for txid in await manager.release_abandoned_contracts():
        out.stderr.write(f"released the coins of contract {display_hex(txid)}, never sent (a crash?)\n")
    endpoint = _server_endpoints(reactor, args.servers)
    if args.count == 0 and args.settle:  # settle only: never open a channel for it
        from twisted_paychan.cli.close import close_channels

        return await close_channels(reactor, args, out, manager.wallet, manager, server_id,
                                    [_server_endpoint(reactor, server) for server in args.servers])
    await pay_checks.settled_while_away(reactor, manager, server_id, out)
    await pay_checks.check_funds(manager, server_id, settings.versions.requested_major, args.value,
                                 int(reactor.seconds()))
    with StopRequest(reactor) as stop:
        return await _pay_stream(reactor, args, out, manager, settings, server_id, info, endpoint, stop)


async def _pay_stream(reactor: Any, args: Any, out: Output, manager: ClientChannelManager,
                      settings: ClientSettings, server_id: bytes, info: Any, endpoint: Any, stop: Any) -> int:
    from twisted_paychan.cli import pay_checks

    try:
        conn = await connect(reactor, endpoint, manager.wallet, manager.chain, manager.store, settings, server_id,
                             None, manager=manager)
    except ChannelClosed as e:
        if isinstance(endpoint, TlsClientEndpoint) and endpoint.tls_error is not None:
            raise UserError(
                f"refusing to pay {args.server}: its TLS certificate cannot be verified ({endpoint.tls_error}); "
                "give the CA that signed it with :trustRoots=DIR"
            ) from None
        from twisted_paychan.cli.errors import closed_in_words

        raise UserError(f"could not open a channel: {closed_in_words(e)}{await _after_failed_opening(manager)}") from None
    except (ConnectError, ConnectionError, DNSLookupError) as e:
        raise UserError(f"cannot reach {args.server}: {e}") from None
    except AllEndpointsFailed as e:
        raise UserError(f"could not open a channel: {e}") from None
    if isinstance(conn, FailoverConnection):
        stop.asked.addCallback(lambda _: conn.stop())  # Ctrl-C during a fail-over's wait
    how = "resumed" if conn.resumed else "opened"
    out.stderr.write(pay_checks.opened_line(conn.record, conn.resumed, conn.contract_txid) + "\n")
    try:
        pay_checks.check_channel_can_pay(conn.record, args.amount, args.count)
    except UserError:
        conn.disconnect()
        await conn.channel.closed
        raise
    paid = 0
    done = 0
    started = time.perf_counter()
    try:
        if args.window > 1 or isinstance(conn, FailoverConnection):
            paid, done = await pipelined_payments(conn, args, info, out, lambda: stop.requested)
        for i in range(args.count if args.window == 1 and not isinstance(conn, FailoverConnection) else 0):
            if stop.requested:
                break
            ack = await conn.pay(args.amount, info)
            paid += ack.amount
            done = i + 1
            if args.count <= 20 or (i + 1) % max(1, args.count // 10) == 0:
                out.stderr.write(f"  payment {i + 1}/{args.count}: {ack.amount} sat acknowledged\n")
            if conn.record is not None and conn.record.client_change == 0 and i + 1 < args.count:
                raise UserError(f"the channel is exhausted after {paid} sat ({i + 1} of {args.count} payments)")
    except ChannelClosed as e:
        from twisted_paychan.cli.errors import closed_in_words

        kept = "; the channel is kept: the next paychan pay resumes it" if e.reason.retryable else ""
        raise UserError(f"payment failed after {paid} sat: {closed_in_words(e)}{kept}") from None
    except ChannelUsageError as e:
        raise UserError(f"payment failed after {paid} sat: {e}") from None
    if stop.requested and conn.record is not None and conn.record.client_change > 0:
        return await _interrupted(out, conn, stop, paid, done, args.count)
    elapsed = time.perf_counter() - started
    record = conn.record
    assert record is not None
    result: dict[str, Any] = {
        "contract_txid": display_hex(conn.contract_txid),
        "resumed": conn.resumed,
        "payments": args.count,
        "paid": paid,
        "channel_value": record.value,
        "channel_paid": record.value - record.client_change,
        "seconds": round(elapsed, 3),
    }
    exhausted = record.client_change == 0
    if exhausted:
        # The server settles by itself (§7.3 step 4): its CLOSE, or (stock bitcoinj) the chain.
        out.stderr.write(f"channel exhausted: {record.value} sat paid; waiting for the server's settlement\n")
        try:
            found = await exhausted_settlement(reactor, conn.channel, settings.settlement_wait)
        except ChannelClosed as e:
            raise UserError(f"settlement failed: {e}") from None
        if conn.channel.close_reason is None:
            conn.disconnect()
            await conn.channel.closed
        result["exhausted"] = True
        if found is not None:
            tx = found.tx if isinstance(found, SettledOnChain) else found
            result["settlement_txid"] = display_hex(txid_of(tx))
            result["settlement_from"] = "chain" if isinstance(found, SettledOnChain) else "server"
        stored = await manager.channel(conn.contract_txid)
        if stored is not None:
            result["state"] = stored.state.value
            result["note"] = stored.note
    elif args.settle:
        try:
            settlement = await conn.settle()
        except ChannelClosed as e:
            raise UserError(f"settlement failed: {e}") from None
        tx = settlement.tx if isinstance(settlement, SettledOnChain) else settlement
        result["settlement_txid"] = display_hex(txid_of(tx))
        result["settlement_from"] = "chain" if isinstance(settlement, SettledOnChain) else "server"
    else:
        conn.disconnect()
        await conn.channel.closed
    lines = [
        f"paid {paid} sat in {args.count} payment(s) over channel {result['contract_txid']} ({how})",
        f"channel: {result['channel_paid']} of {result['channel_value']} sat paid",
    ]
    if "settlement_txid" in result:
        lines.append(f"settled by {result['settlement_txid']}")
    elif exhausted:
        lines.append(f"exhausted: the server's settlement has not appeared within {settings.settlement_wait:g} s; "
                     "paychan watch finishes the channel (settled when it appears, refunded after expiry)")
    else:
        lines.append("kept open: the next paychan pay resumes it")
    out.emit("\n".join(lines), result)
    return 0


def exhausted_settlement(clock: IReactorTime, channel: ClientChannel,
                         wait: float) -> defer.Deferred[Optional[Settlement]]:
    """The settlement of a channel a payment exhausted, once the connection has ended (the
    server's CLOSE, or EOF from stock bitcoinj and then the chain); None if it has not come
    within ``wait`` seconds on ``clock``. Fails with ChannelClosed when the connection ended
    otherwise (an ERROR)."""
    result: defer.Deferred[Optional[Settlement]] = defer.Deferred()

    def finish(outcome: Union[None, Settlement, Failure]) -> None:
        if result.called:
            return
        if timer.active():
            timer.cancel()
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    def closed(reason: object) -> object:
        channel.settle().addBoth(finish)
        return reason

    timer = clock.callLater(wait, finish, None)
    channel.closed.addBoth(closed)
    return result


async def _interrupted(out: Output, conn: Any, stop: Any, paid: int, done: int, count: int) -> int:
    """SIGINT/SIGTERM: the payment in flight has finished; disconnect without settling (the
    channel stays stored, resumable) and say what was paid."""
    conn.disconnect()
    await conn.channel.closed
    record = conn.record
    txid = display_hex(conn.contract_txid)
    out.emit(
        f"stopped by {stop.name} after {done} of {count} payment(s), {paid:,} sat paid; channel {txid} "
        f"({record.value - record.client_change:,} of {record.value:,} sat paid) is kept: the next paychan pay "
        "resumes it",
        {"interrupted": stop.name, "contract_txid": txid, "payments": done, "paid": paid,
         "channel_value": record.value, "channel_paid": record.value - record.client_change, "resumable": True},
    )
    return int(stop.exit_status)
