"""
``paychan backup --data-dir DIR OUT_DIR``: a consistent copy of the channel store and the wallet
of a data directory, safe while the server runs on it (see ``twisted_paychan.backup``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from twisted_paychan.cli import api_client
from twisted_paychan.cli.output import Output, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the copy to (created private; must not hold a backup)")


async def run_backup(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    from twisted_paychan.backup import BackupError, backup

    if args.data_dir is None:
        raise UserError("paychan backup needs --data-dir (the data directory to copy)")
    # A running server makes the copy itself (its files stay its own user's), through its API.
    answer = await api_client.ask(reactor, args.data_dir, "POST", "/v1/backup",
                                  {"out_dir": os.path.abspath(args.out_dir)})
    if answer is not None:
        made = dict(api_client.checked(answer))
        how = "by the running server"
    else:
        try:
            result = backup(args.data_dir, args.out_dir)
        except BackupError as e:
            raise UserError(str(e)) from None
        made = {
            "out_dir": result.out_dir, "files": list(result.files), "server_channels": result.server_channels,
            "client_channels": result.client_channels, "wallet_keys": result.wallet_keys, "online": result.online,
            "logged_payments": result.logged_payments, "created": result.created,
        }
        how = "online, beside the running server" if result.online else "with the data directory locked"
    made["through_api"] = answer is not None
    keys = "no wallet" if made["wallet_keys"] is None else f"the wallet ({made['wallet_keys']} keys)"
    human = (f"backed up {made['server_channels']} server and {made['client_channels']} client channel(s) "
             f"and {keys} to {made['out_dir']} ({how}; {made['logged_payments']} payment(s) from the payment log)")
    out.emit(human, made)
    return 0
