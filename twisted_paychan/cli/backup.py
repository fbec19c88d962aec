"""
``paychan backup --data-dir DIR OUT_DIR``: a consistent copy of the channel store and the wallet
of a data directory, safe while the server runs on it (see ``twisted_paychan.backup``).
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted_paychan.cli.output import Output, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the copy to (created private; must not hold a backup)")


async def run_backup(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    from twisted_paychan.backup import BackupError, backup

    if args.data_dir is None:
        raise UserError("paychan backup needs --data-dir (the data directory to copy)")
    try:
        result = backup(args.data_dir, args.out_dir)
    except BackupError as e:
        raise UserError(str(e)) from None
    how = "online, beside the running server" if result.online else "with the data directory locked"
    keys = "no wallet" if result.wallet_keys is None else f"the wallet ({result.wallet_keys} keys)"
    human = (f"backed up {result.server_channels} server and {result.client_channels} client channel(s) "
             f"and {keys} to {result.out_dir} ({how}; {result.logged_payments} payment(s) from the payment log)")
    out.emit(human, {
        "out_dir": result.out_dir, "files": list(result.files), "server_channels": result.server_channels,
        "client_channels": result.client_channels, "wallet_keys": result.wallet_keys, "online": result.online,
        "logged_payments": result.logged_payments, "created": result.created,
    })
    return 0
