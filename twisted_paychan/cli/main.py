"""
``paychan``: the command line of twisted-paychan.

    paychan regtest --data-dir DIR [--rpc-listen tcp:18443:interface=127.0.0.1]
                    [--rpc-user U --rpc-password-file F] [--mine-every SECONDS] [--fee-rate SAT_PER_KB]
    paychan wallet --data-dir DIR [--chain embedded|URL] [--passphrase-file F] new-address|balance|coins|encrypt|seed|restore|send
    paychan regtest-fund [--chain embedded|URL] ADDRESS SATS
    paychan regtest-mine [--chain embedded|URL] N
    paychan pay --server ENDPOINT [--chain URL] --data-dir DIR --value SATS --amount SATS --count N
                [--version 1|2|2or1] [--info HEX] [--settle | --keep-open]
    paychan channels --data-dir DIR
    paychan close --server ENDPOINT [--chain URL] --data-dir DIR
    paychan info --data-dir DIR
    paychan settle --data-dir DIR (CONTRACT_TXID | --all)
    paychan watch --data-dir DIR [--chain URL]
    paychan backup --data-dir DIR OUT_DIR
    paychan signer --data-dir DIR --passphrase-file F [--listen ENDPOINT] [--daily-limit SATS]

Every command takes ``--json`` (one JSON document on stdout), ``--debug`` (a traceback with an
error) and ``--chain``/``--rpc-cookie``/``--data-dir``/``--create`` where they apply; a missing
data directory is created only with ``--create`` (``cli.errors``). Exit status: 0 success, 1 an
error the user can act on (the message says what; no traceback), 2 bad usage, 70 an internal
error (with a traceback), 130/143 ``pay`` stopped by SIGINT/SIGTERM (``cli.stopping``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any, Awaitable, Callable, Optional, Sequence, TextIO

from twisted_paychan.chain.embedded.rpc.server import DEFAULT_ENDPOINT
from twisted_paychan.cli import runner
from twisted_paychan.cli.output import Output, UserError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70

Command = Callable[[Any, argparse.Namespace, Output], Awaitable[int]]


def _common(json_only: bool = False) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error too")
    if not json_only:
        parent.add_argument("--data-dir", default=argparse.SUPPRESS, help="data directory (node, wallet, cookie)")
        parent.add_argument("--create", action="store_true", default=argparse.SUPPRESS,
                            help="create --data-dir (and, with --chain embedded, a private regtest chain in it) "
                                 "if it does not exist")
        parent.add_argument(
            "--chain",
            default=argparse.SUPPRESS,
            help="'embedded' (the node in --data-dir, in this process; the default) or an RPC URL "
            "http://[user:password@]host:port",
        )
        parent.add_argument("--rpc-cookie", default=argparse.SUPPRESS, metavar="PATH", help="RPC cookie file (bitcoind's .cookie)")
        parent.add_argument("--rpc-user", default=argparse.SUPPRESS, metavar="USER", help="RPC user (with --rpc-password-file)")
        parent.add_argument(
            "--rpc-password-file", default=argparse.SUPPRESS, metavar="FILE",
            help="file whose first line is the RPC password (never give it in argv)",
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="paychan", description="bitcoinj-compatible micropayment channels on Twisted", parents=[common]
    )
    from twisted_paychan import __version__

    parser.add_argument("--version", action="version", version=f"paychan (twisted-paychan) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    regtest = commands.add_parser("regtest", parents=[_common(json_only=True)], help="run an embedded regtest node serving JSON-RPC")
    regtest.add_argument("--data-dir", default=argparse.SUPPRESS, help="the node's data directory (created if needed)")
    regtest.add_argument("--rpc-listen", default=DEFAULT_ENDPOINT, metavar="ENDPOINT", help=f"Twisted endpoint (default {DEFAULT_ENDPOINT})")
    regtest.add_argument("--rpc-user", help="accept this user (with --rpc-password-file) instead of writing a cookie")
    regtest.add_argument("--rpc-password-file", metavar="FILE", help="file whose first line is the RPC password")
    regtest.add_argument("--rpc-password", help="the RPC password itself (visible in argv: prefer --rpc-password-file)")
    regtest.add_argument("--mine-every", type=float, metavar="SECONDS", help="mine a block every SECONDS")
    regtest.add_argument("--fee-rate", type=int, metavar="SAT_PER_KB", help="what estimatesmartfee answers (default: no estimate)")
    regtest.add_argument("--no-log", dest="log", action="store_false", help="do not log to stderr")
    regtest.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")

    wallet_common = argparse.ArgumentParser(add_help=False, parents=[common])
    wallet_common.add_argument(
        "--passphrase-file", default=argparse.SUPPRESS, metavar="FILE", help="file holding the wallet's passphrase"
    )
    wallet = commands.add_parser("wallet", parents=[wallet_common], help="the wallet in DATA_DIR/wallet.sqlite")
    actions = wallet.add_subparsers(dest="wallet_command", metavar="ACTION")
    actions.required = True
    new_address = actions.add_parser("new-address", parents=[wallet_common], help="a fresh receive address")
    new_address.add_argument("--type", choices=("p2wpkh", "p2pkh"), default="p2wpkh")
    actions.add_parser("balance", parents=[wallet_common], help="confirmed and unconfirmed balance")
    actions.add_parser("coins", parents=[wallet_common], help="the spendable coins")
    actions.add_parser(
        "encrypt", parents=[wallet_common],
        help="encrypt a plaintext wallet in place (new passphrase from --passphrase-file, or asked twice)",
    )
    from twisted_paychan.cli.wallet_seed import add_arguments as wallet_seed_arguments

    wallet_seed_arguments(actions, [wallet_common])

    fund = commands.add_parser("regtest-fund", parents=[common], help="mine coins and send SATS to ADDRESS, confirmed")
    fund.add_argument("address", metavar="ADDRESS")
    fund.add_argument("sats", metavar="SATS", type=int)
    fund.add_argument("--fee-rate", type=int, default=2000, metavar="SAT_PER_KB")

    pay = commands.add_parser("pay", parents=[wallet_common], help="open or resume a channel to a server and pay it")
    from twisted_paychan.cli.pay import add_arguments as pay_arguments

    pay_arguments(pay)

    channels = commands.add_parser("channels", parents=[common], help="the channels stored in --data-dir")
    from twisted_paychan.cli.channels import add_arguments as channels_arguments

    channels_arguments(channels)

    commands.add_parser("info", parents=[common], help="what a server holds and how it runs (through its API if running)")

    commands.add_parser("watch", parents=[common], help="broadcast refunds of expired client channels (runs until stopped)")

    settle = commands.add_parser("settle", parents=[wallet_common], help="settle stored server channels now")
    from twisted_paychan.cli.settle import add_arguments as settle_arguments

    settle_arguments(settle)
    settle.add_argument("--fee-rate", type=int, default=1000, metavar="SAT_PER_KB",
                        help="settlement fee rate when the server is not running (default 1000)")

    close = commands.add_parser("close", parents=[wallet_common],
                                help="settle the open client channel(s) to a server, without paying")
    from twisted_paychan.cli.close import add_arguments as close_arguments

    close_arguments(close)
    backup = commands.add_parser("backup", parents=[common], help="copy the channel store and the wallet (safe while the server runs)")
    from twisted_paychan.cli.backup import add_arguments as backup_arguments

    backup_arguments(backup)

    signer = commands.add_parser("signer", parents=[wallet_common],
                                 help="hold the server's keys and sign only what it needs (runs until stopped)")
    from twisted_paychan.cli.signer import add_arguments as signer_arguments

    signer_arguments(signer)

    mine = commands.add_parser("regtest-mine", parents=[common], help="mine N blocks")
    mine.add_argument("blocks", metavar="N", type=int)
    mine.add_argument("--address", help="pay the coinbases here (default: anyone-can-spend P2WSH(OP_TRUE))")
    return parser


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    defaults = (("json", False), ("debug", False), ("create", False), ("data_dir", None), ("chain", "embedded"), ("rpc_cookie", None),
                ("rpc_user", None), ("rpc_password_file", None), ("passphrase_file", None))
    for name, value in defaults:
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def _command(args: argparse.Namespace) -> Command:
    if args.command == "regtest":
        from twisted_paychan.cli.regtest import run_regtest

        return run_regtest
    if args.command == "wallet":
        from twisted_paychan.cli.wallet import run_wallet

        return run_wallet
    if args.command == "pay":
        from twisted_paychan.cli.pay import run_pay

        return run_pay
    if args.command == "channels":
        from twisted_paychan.cli.channels import run_channels

        return run_channels
    if args.command == "info":
        from twisted_paychan.cli.info import run_info

        return run_info
    if args.command == "watch":
        from twisted_paychan.cli.watch import run_watch

        return run_watch
    if args.command == "settle":
        from twisted_paychan.cli.settle import run_settle

        return run_settle
    if args.command == "close":
        from twisted_paychan.cli.close import run_close

        return run_close
    if args.command == "backup":
        from twisted_paychan.cli.backup import run_backup

        return run_backup
    if args.command == "signer":
        from twisted_paychan.cli.signer import run_signer

        return run_signer
    from twisted_paychan.cli.funding import run_fund, run_mine

    return run_fund if args.command == "regtest-fund" else run_mine


def _user_message(error: BaseException) -> Optional[str]:
    """The message for an error the user can act on, or None for a bug (``cli.errors``)."""
    from twisted_paychan.cli.errors import user_message

    return user_message(error)


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """Run ``paychan`` with ``argv`` (default: the process's arguments); the exit status."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = build_parser()
    try:
        args = _defaults(parser.parse_args(None if argv is None else list(argv)))
    except SystemExit as e:  # argparse has printed usage (or --help)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    out = Output(stdout, stderr, args.json)
    command = _command(args)
    try:
        from twisted_paychan.cli.errors import check_data_dir

        check_data_dir(args)
        return runner.run(
            lambda reactor: command(reactor, args, out),
            install_signal_handlers=args.command in ("regtest", "watch", "signer"),
        )
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except Exception as e:
        message = _user_message(e)
        if message is None:
            out.error(f"internal error: {type(e).__name__}: {e}")
            traceback.print_exc(file=stderr)
            return EXIT_INTERNAL
        out.error(message)
        if args.debug:
            traceback.print_exc(file=stderr)
        return e.exit_code if isinstance(e, UserError) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
