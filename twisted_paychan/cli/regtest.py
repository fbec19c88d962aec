"""
``paychan regtest``: a standalone embedded regtest node serving Bitcoin Core's JSON-RPC until
interrupted. The node lives in ``DATA_DIR/chain`` (the channel server's layout), its cookie
beside it.

SIGINT, SIGTERM and the ``stop`` RPC all stop the reactor; the service's shutdown then closes
the port, removes the cookie and closes the node (flushing the kernel's databases). When
listening it prints one line saying where (with ``--json``, one JSON object with ``url``,
``port``, ``cookie``, ``height``), so a script that started it on port 0 can learn the port.
The log goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from twisted_paychan import logs
from twisted_paychan.chain.embedded.datadir import DatadirInUse
from twisted_paychan.chain.embedded.rpc.service import NodeRpcService
from twisted_paychan.cli.chains import node_directory
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.rpc.auth import COOKIE_FILE


def _start_logging(verbose: bool) -> None:
    level = LogLevel.debug if verbose else LogLevel.info
    logs.set_verbose(verbose)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def run_regtest(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan regtest needs --data-dir (the node's data directory)")
    password = args.rpc_password
    if getattr(args, "rpc_password_file", None) is not None:
        if password is not None:
            raise UserError("give --rpc-password-file or --rpc-password, not both")
        from twisted_paychan.secretfiles import SecretFileError, read_secret_file

        try:
            password = read_secret_file(args.rpc_password_file, "RPC password")
        except SecretFileError as e:
            raise UserError(str(e)) from None
    elif password is not None:
        out.stderr.write("paychan: warning: --rpc-password is visible to every user of this machine; use --rpc-password-file\n")
    if (args.rpc_user is None) != (password is None):
        raise UserError("give both --rpc-user and --rpc-password-file, or neither (a cookie is written)")
    if args.mine_every is not None and args.mine_every <= 0:
        raise UserError("--mine-every must be a positive number of seconds")
    node_dir = node_directory(args.data_dir)
    service = NodeRpcService(
        reactor,
        node_dir,
        args.rpc_listen,
        user=args.rpc_user,
        password=password,
        mine_every=args.mine_every,
        fee_rate=args.fee_rate,
        on_stop=reactor.stop,
    )
    stopped: Deferred[None] = Deferred()

    def shut_down() -> "Deferred[None]":
        async def stop() -> None:
            try:
                await service.stopService()
            finally:
                stopped.callback(None)

        return Deferred.fromCoroutine(stop())

    service.startService()
    try:
        server = await service.ready
    except DatadirInUse as e:
        raise UserError(str(e)) from None
    except CannotListenError as e:
        raise UserError(f"cannot listen on {args.rpc_listen}: {e.socketError or e}") from None
    except ValueError as e:  # a malformed endpoint string
        raise UserError(f"bad --rpc-listen {args.rpc_listen!r}: {e}") from None
    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    if args.log:
        _start_logging(args.verbose)  # only now: a failed start is one error line, not a log
    node = service.node
    assert node is not None
    cookie = None if server.cookie is None else str(node_dir / COOKIE_FILE)
    auth = f"cookie {cookie}" if cookie else f"user {args.rpc_user}"
    out.emit(
        f"regtest node at height {node.height} in {args.data_dir}\nJSON-RPC on {server.url} ({auth})",
        {
            "event": "listening",
            "url": server.url,
            "host": server.host,
            "port": server.port_number,
            "cookie": cookie,
            "height": node.height,
            "data_dir": str(args.data_dir),
        },
    )
    await stopped
    return 0
