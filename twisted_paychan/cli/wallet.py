"""
``paychan wallet``: the SQLite wallet of a data directory (``DATA_DIR/wallet.sqlite``), against
the chain ``--chain`` names.

``new-address`` prints a fresh receive address (stored before it is printed); ``balance`` and
``coins`` refresh the wallet's coins from the chain first, and count the change and refunds of
the client channels in ``DATA_DIR/channels.sqlite``. The wallet's network is the chain's (a
wallet file made for another network is refused). ``seed``, ``restore`` and ``send`` are in
``wallet_seed``. A command that creates the wallet shows its recovery words once, on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from twisted_paychan.chain.types import Balance, display_hex
from twisted_paychan.cli import api_client
from twisted_paychan.cli.chains import open_chain, rpc_login
from twisted_paychan.cli.output import Output, UserError, format_sat
from twisted_paychan.rpc.jsonenc import btc
from twisted_paychan.cli.wallet_seed import (
    check_send,
    emit_sent,
    run_restore,
    run_seed,
    run_send,
    show_new_words,
    track_stored_channels,
)
from twisted_paychan.wallet import SqliteWallet
from twisted_paychan.secretfiles import SecretFileError, private_directory, read_secret_file
from twisted_paychan.wallet.errors import AlreadyEncrypted, PassphraseRequired, WalletError, WrongPassphrase

WALLET_FILE = "wallet.sqlite"


def _passphrase(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    try:
        return read_secret_file(path, "passphrase")
    except SecretFileError as e:
        raise UserError(str(e)) from None


def open_wallet(path: "Path | str", chain: Any, network: Any, passphrase_file: Optional[str],
                stderr: Optional[TextIO] = None) -> SqliteWallet:
    """The wallet at ``path``, unlocked with the passphrase in ``passphrase_file`` if it is
    encrypted; the errors a user can fix as one-line :class:`UserError` s. A wallet this call
    creates shows its recovery words once, on ``stderr``."""
    passphrase = _passphrase(passphrase_file)
    try:
        wallet = SqliteWallet.open(path, chain, network, passphrase=passphrase)
    except PassphraseRequired:
        raise UserError(f"{path} is encrypted: give its passphrase with --passphrase-file") from None
    except WrongPassphrase:
        raise UserError(f"the passphrase does not unlock {path}") from None
    except WalletError as e:
        raise UserError(str(e)) from None
    show_new_words(wallet, stderr)
    return wallet


def _new_passphrase(path: Optional[str]) -> str:
    """The passphrase to encrypt with: from the file, or typed twice at the terminal."""
    from_file = _passphrase(path)
    if from_file is not None:
        return from_file
    if not sys.stdin.isatty():
        raise UserError("give the new passphrase with --passphrase-file (no terminal to ask on)")
    first = getpass.getpass("new wallet passphrase: ")
    if not first:
        raise UserError("the passphrase must not be empty")
    if getpass.getpass("again: ") != first:
        raise UserError("the passphrases differ; nothing was changed")
    return first


def _encrypt(args: argparse.Namespace, out: Output) -> int:
    from twisted_paychan.wallet.encrypt_file import encrypt_wallet_file

    path = Path(args.data_dir) / WALLET_FILE
    if not path.exists():
        raise UserError(f"there is no wallet at {path}")
    passphrase = _new_passphrase(args.passphrase_file)
    try:
        encrypt_wallet_file(path, passphrase)
    except AlreadyEncrypted:
        raise UserError(f"{path} is already encrypted") from None
    except WalletError as e:
        raise UserError(str(e)) from None
    out.emit(f"encrypted {path}; keep the passphrase: without it the wallet's keys are lost",
             {"wallet": str(path), "encrypted": True})
    return 0


async def run_wallet(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan wallet needs --data-dir (where wallet.sqlite lives)")
    if args.wallet_command == "encrypt":
        return _encrypt(args, out)
    path = Path(args.data_dir) / WALLET_FILE
    if args.wallet_command == "seed":
        return run_seed(path, args, out)
    if args.wallet_command == "send":
        amount = check_send(args, running=api_client.running_server(args.data_dir) is not None)
        answer = await api_client.ask(reactor, args.data_dir, "POST", "/v1/wallet/send",
                                      {"address": args.address, "amount": "all" if amount is None else amount,
                                       "fee_rate": args.fee_rate})
        if answer is not None:  # the running server's wallet, through its API
            emit_sent(out, api_client.checked(answer))
            return 0
    if args.wallet_command == "balance":  # the running server's wallet, through its API
        answer = await api_client.ask(reactor, args.data_dir, "GET", "/v1/wallet/balance")
        if answer is not None:
            body = api_client.checked(answer)
            _emit_balance(out, Balance(int(body["confirmed"]), int(body["unconfirmed"])))
            return 0
    _passphrase(args.passphrase_file)  # an unreadable file fails before the chain is opened
    private_directory(args.data_dir)  # before the embedded node makes it, with the umask's mode
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        if args.wallet_command == "restore":
            return await run_restore(reactor, path, access, args, out)
        wallet = open_wallet(path, access.chain, access.network, args.passphrase_file, out.stderr)
        try:
            if args.wallet_command in ("balance", "coins", "send"):
                await track_stored_channels(wallet, Path(args.data_dir), reactor)
            if args.wallet_command == "send":
                return await run_send(wallet, access.chain, args, out)
            return await _wallet_command(wallet, args, out)
        finally:
            wallet.close()
    finally:
        await access.close()


async def _wallet_command(wallet: SqliteWallet, args: argparse.Namespace, out: Output) -> int:
    if args.wallet_command == "new-address":
        address = await wallet.new_address(args.type)
        out.emit(address, {"address": address, "type": args.type, "network": wallet.network.name})
    elif args.wallet_command == "balance":
        _emit_balance(out, await wallet.balance())
    else:
        coins = await wallet.coins()
        lines = [
            f"{display_hex(c.outpoint.txid)}:{c.outpoint.index}  {format_sat(c.value)}  "
            + ("unconfirmed" if c.height is None else f"height {c.height}")
            for c in coins
        ]
        out.emit(
            "\n".join(lines) if lines else "no coins",
            [
                {
                    "txid": display_hex(c.outpoint.txid),
                    "vout": c.outpoint.index,
                    "value": c.value,
                    "amount": btc(c.value),
                    "height": c.height,
                    "coinbase": c.coinbase,
                    "script_pubkey": c.script_pubkey.hex(),
                }
                for c in coins
            ],
        )
    return 0


def _emit_balance(out: Output, balance: Balance) -> None:
    out.emit(
        "\n".join(
            [
                f"confirmed:   {format_sat(balance.confirmed)}",
                f"unconfirmed: {format_sat(balance.unconfirmed)}",
                f"total:       {format_sat(balance.total)}",
            ]
        ),
        {
            "confirmed": balance.confirmed,
            "unconfirmed": balance.unconfirmed,
            "total": balance.total,
            "confirmed_btc": btc(balance.confirmed),
            "unconfirmed_btc": btc(balance.unconfirmed),
            "total_btc": btc(balance.total),
        },
    )
