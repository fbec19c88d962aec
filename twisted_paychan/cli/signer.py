"""
``paychan signer --data-dir D --listen ENDPOINT``: the remote signer (``twisted_paychan.signer``),
running until SIGINT or SIGTERM.

It opens ``D/wallet.sqlite`` (created on the first start, encrypted under ``--passphrase-file``,
which it requires: keys kept off the server are kept encrypted) and ``D/signer.sqlite`` (the
ledger), listens on ``--listen`` (``unix:D/signer/signer.sock`` unless told otherwise), prints
one line saying where, and logs every signature it makes, and every refusal, to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError

from twisted_paychan.cli.output import Output, UserError

#: The daily limit unless ``--daily-limit`` says otherwise: nothing leaves the wallet but by
#: settlement payouts until the operator says how much may.
DEFAULT_DAILY_LIMIT = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="ENDPOINT",
                        help="unix:PATH (default unix:DATA_DIR/signer/signer.sock, owner-only) or "
                             "tls:PORT:certificate=PEM:clientCA=PEM[:interface=ADDR]")
    parser.add_argument("--daily-limit", type=int, default=DEFAULT_DAILY_LIMIT, metavar="SATS",
                        help="what wallet fundings and sweeps may send away in 24 hours, fees included "
                             f"(default {DEFAULT_DAILY_LIMIT})")
    parser.add_argument("--max-fee-rate", type=int, metavar="SAT_PER_KB",
                        help="the highest fee rate signed (default 100000)")
    parser.add_argument("--network", choices=("regtest", "testnet", "mainnet"), default="regtest",
                        help="the chain the keys are for (default regtest)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")


async def run_signer(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    from twisted_paychan.bitcoin.addresses import NETWORKS
    from twisted_paychan.cli.regtest import _start_logging
    from twisted_paychan.secretfiles import SecretFileError, private_directory, read_secret_file
    from twisted_paychan.signer.endpoints import EndpointError, server_endpoint
    from twisted_paychan.signer.ledger import Ledger
    from twisted_paychan.signer.service import DEFAULT_MAX_FEE_RATE, SignerFactory, SigningService
    from twisted_paychan.wallet.errors import NotEncrypted, WalletError, WrongPassphrase
    from twisted_paychan.wallet.sqlite import SqliteWallet

    if args.data_dir is None:
        raise UserError("paychan signer needs --data-dir (where its keys are kept)")
    if args.passphrase_file is None:
        raise UserError("paychan signer keeps its keys encrypted: give their passphrase with --passphrase-file")
    if args.daily_limit < 0:
        raise UserError("--daily-limit must be 0 or more satoshis")
    data_dir = os.path.abspath(args.data_dir)
    private_directory(data_dir)
    try:
        passphrase = read_secret_file(args.passphrase_file, "wallet passphrase")
    except SecretFileError as e:
        raise UserError(str(e)) from None
    path = os.path.join(data_dir, "wallet.sqlite")
    try:
        wallet = SqliteWallet.open(path, None, NETWORKS[args.network], passphrase=passphrase)
    except NotEncrypted:
        raise UserError(f"the wallet {path} is not encrypted; run `paychan wallet encrypt --data-dir {data_dir}` "
                        "first") from None
    except WrongPassphrase:
        raise UserError(f"the passphrase in {args.passphrase_file} does not unlock the wallet {path}") from None
    except WalletError as e:
        raise UserError(f"cannot open the wallet {path}: {e}") from None
    ledger = Ledger(os.path.join(data_dir, "signer.sqlite"))
    service = SigningService(wallet, ledger, reactor, args.daily_limit,
                             args.max_fee_rate if args.max_fee_rate is not None else DEFAULT_MAX_FEE_RATE)
    listen = args.listen or f"unix:{os.path.join(data_dir, 'signer', 'signer.sock')}"
    try:
        port = await server_endpoint(reactor, listen).listen(SignerFactory(service))
    except (EndpointError, ValueError) as e:
        wallet.close()
        ledger.close()
        raise UserError(f"bad --listen {listen!r}: {e}") from None
    except CannotListenError as e:
        wallet.close()
        ledger.close()
        raise UserError(f"cannot listen on {listen}: {e.socketError or e}") from None
    stopped: Deferred[None] = Deferred()

    def shut_down() -> "Deferred[None]":
        d: Deferred[Any] = Deferred.fromCoroutine(_stop(port))

        def closed(_: object) -> None:
            wallet.close()
            ledger.close()
            stopped.callback(None)

        return d.addBoth(closed)

    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    _start_logging(args.verbose)
    if wallet.created:
        sys.stderr.write(f"paychan: created the signer's wallet {path}; write down its recovery words, which "
                         f"`paychan wallet seed --data-dir {data_dir} --passphrase-file FILE` shows\n")
    out.emit(f"signer listening on {listen} ({args.network}, daily limit {args.daily_limit} sat)",
             {"event": "listening", "listen": listen, "network": args.network, "daily_limit": args.daily_limit})
    await stopped
    return 0


async def _stop(port: Any) -> None:
    await port.stopListening()
