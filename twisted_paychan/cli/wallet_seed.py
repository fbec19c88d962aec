"""
``paychan wallet seed``, ``restore`` and ``send``: the wallet's words, a wallet rebuilt from
them, and withdrawing.

* ``seed`` shows the BIP39 words of ``DATA_DIR/wallet.sqlite`` (its passphrase from
  ``--passphrase-file`` or asked at the terminal when it is encrypted). It needs no chain.
* ``restore`` makes ``DATA_DIR/wallet.sqlite`` from words (``--mnemonic-file``, or typed at the
  terminal, never in argv), encrypted when ``--passphrase-file`` is given, and finds its coins on
  the chain: the receive and payout branches with a gap limit, and the channel keys of the
  channels in ``DATA_DIR/channels.sqlite`` (restore the channel store there first).
* ``send ADDRESS AMOUNT|all`` pays an address (``wallet.send.send_coins``).

The words are printed to stdout only by ``seed`` and once by the command that creates a wallet
(:func:`show_new_words`, to stderr, so a script reading stdout does not store them by chance).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from twisted_paychan.bitcoin.addresses import NETWORKS
from twisted_paychan.chain.interfaces import InsufficientFunds
from twisted_paychan.cli.errors import check_fee_rate
from twisted_paychan.cli.output import Output, UserError, format_sat
from twisted_paychan.rpc.jsonenc import btc
from twisted_paychan.secretfiles import SecretFileError, read_secret_file
from twisted_paychan.wallet import SqliteWallet
from twisted_paychan.wallet.errors import NoSeed, PassphraseRequired, WalletError, WrongPassphrase
from twisted_paychan.wallet.hd import InvalidMnemonic, Seed
from twisted_paychan.wallet.restore import ChannelKey, find_coins
from twisted_paychan.wallet.send import SendError, send_coins

__all__ = ["add_arguments", "show_new_words", "run_seed", "run_restore", "run_send", "check_send", "track_stored_channels"]


def add_arguments(actions: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The ``seed``, ``restore`` and ``send`` actions of ``paychan wallet``."""
    actions.add_parser("seed", parents=parents, help="show the wallet's recovery words (a secret)")
    restore = actions.add_parser(
        "restore", parents=parents, help="rebuild the wallet from its words in a new data directory and find its coins")
    restore.add_argument("--mnemonic-file", metavar="FILE", help="file holding the words (else they are asked for)")
    send = actions.add_parser("send", parents=parents, help="pay ADDRESS from the wallet: AMOUNT sat, or all")
    send.add_argument("address", metavar="ADDRESS")
    send.add_argument("amount", metavar="AMOUNT|all")
    send.add_argument("--fee-rate", type=int, default=1000, metavar="SAT_PER_KB", help="fee rate (default 1000)")


def show_new_words(wallet: SqliteWallet, stderr: Optional[TextIO] = None) -> None:
    """Once, when a command has just created ``wallet``: its words, with what they are for."""
    if not (wallet.created and wallet.has_seed):
        return
    stream = sys.stderr if stderr is None else stderr
    stream.write(
        f"created the wallet {wallet.path}. Its recovery words, shown this once "
        "(`paychan wallet seed` shows them again); write them down and keep them secret:\n"
        f"    {wallet.mnemonic()}\n")
    stream.flush()


def _stored_network(path: Path) -> Any:
    from twisted_paychan.wallet.encrypt_file import stored_network

    try:
        return NETWORKS[stored_network(str(path))]
    except WalletError as e:
        raise UserError(str(e)) from None


def _ask(prompt: str, what: str, option: str) -> str:
    if not sys.stdin.isatty():
        raise UserError(f"give the {what} with {option} (no terminal to ask on)")
    return getpass.getpass(prompt)


def _read_file(path: str, what: str) -> str:
    try:
        return read_secret_file(path, what)
    except SecretFileError as e:
        raise UserError(str(e)) from None


def run_seed(path: Path, args: argparse.Namespace, out: Output) -> int:
    if not path.exists():
        raise UserError(f"there is no wallet at {path}")
    network = _stored_network(path)
    passphrase = None if args.passphrase_file is None else _read_file(args.passphrase_file, "passphrase")
    try:
        try:
            wallet = SqliteWallet.open(path, None, network, passphrase=passphrase)
        except PassphraseRequired:
            typed = _ask("wallet passphrase: ", "wallet's passphrase", "--passphrase-file")
            wallet = SqliteWallet.open(path, None, network, passphrase=typed)
    except WrongPassphrase:
        raise UserError(f"the passphrase does not unlock {path}") from None
    except WalletError as e:
        raise UserError(str(e)) from None
    try:
        words = wallet.mnemonic()
    except NoSeed:
        raise UserError(f"{path} was made before wallets had recovery words: its keys are random. "
                        "Back up the file itself, or move its coins to a new wallet with `paychan wallet send`") from None
    finally:
        wallet.close()
    out.emit(words, {"mnemonic": words, "words": len(words.split()), "network": network.name})
    return 0


def _words(args: argparse.Namespace) -> str:
    if args.mnemonic_file is not None:
        # A mnemonic file holds one line of words; read_secret_file checks it is private.
        return _read_file(args.mnemonic_file, "recovery words")
    return _ask("recovery words: ", "recovery words", "--mnemonic-file")


async def run_restore(reactor: Any, path: Path, access: Any, args: argparse.Namespace, out: Output) -> int:
    if path.exists():
        raise UserError(f"{path} exists: restore into a new data directory")
    try:
        seed = Seed.from_mnemonic(_words(args), access.network)
    except InvalidMnemonic as e:
        raise UserError(str(e)) from None
    passphrase = None if args.passphrase_file is None else _read_file(args.passphrase_file, "passphrase")
    try:
        wallet = SqliteWallet.open(path, access.chain, access.network, passphrase=passphrase, seed=seed)
    except WalletError as e:
        raise UserError(str(e)) from None
    try:
        keys = await _stored_channel_keys(Path(args.data_dir), reactor)
        report = await find_coins(wallet, access.chain, keys)
        balance = await wallet.balance()
    finally:
        wallet.close()
    lines = [
        f"restored {path} from its words",
        f"keys in use: {report.keys['receive']} receive, {report.keys['receive_legacy']} legacy receive, "
        f"{report.keys['payout']} payout, {report.keys['channel']} of {len(keys)} channel key(s)",
        f"balance: {format_sat(balance.total)}",
    ]
    if report.missing_channel_keys:
        lines.append(f"{len(report.missing_channel_keys)} channel key(s) in the channel store are not from these words")
    out.emit("\n".join(lines), {
        "wallet": str(path), "keys": report.keys, "channel_keys": len(keys),
        "missing_channel_keys": [k.hex() for k in report.missing_channel_keys],
        "confirmed": balance.confirmed, "unconfirmed": balance.unconfirmed, "total": balance.total,
    })
    return 0


async def _stored_channel_keys(data_dir: Path, reactor: Any) -> list[ChannelKey]:
    """The channel keys the data directory's channel store names: a client's are tracked."""
    if not (data_dir / "channels.sqlite").exists():
        return []
    from twisted_paychan.store.sqlite import StoreLocked, open_store

    try:
        store = open_store(str(data_dir), reactor)
    except StoreLocked:
        raise UserError(f"the channel store in {data_dir} is in use by a running paychan process") from None
    try:
        clients = await store.client_channels()
        servers = await store.server_channels()
    finally:
        await store.close()
    return [ChannelKey(r.client_key, True) for r in clients] + [ChannelKey(r.server_key, False) for r in servers]


async def track_stored_channels(wallet: SqliteWallet, data_dir: Path, reactor: Any) -> None:
    """Track the change and refunds of the client channels in the channel store, for keys a
    wallet stored before it tracked them. A store in use (a running server) is left alone."""
    try:
        keys = await _stored_channel_keys(data_dir, reactor)
    except UserError:  # the store is in use
        return
    for key in keys:
        if key.tracked:
            try:
                wallet.track_channel_key(key.public_key)
            except KeyError:
                pass  # a channel of another wallet's key: not ours to count


def _amount(text: str) -> Optional[int]:
    if text.lower() == "all":
        return None
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise UserError(f"AMOUNT is a number of sat or 'all', not {text!r}") from None
    if value <= 0:
        raise UserError(f"AMOUNT must be positive, not {value}")
    return value


def check_send(args: argparse.Namespace, running: bool = False) -> Optional[int]:
    """The amount (None: all), after every check that needs no chain: a mistake costs no
    node start. ``running``: a server runs for the data dir and sends through its API (its
    chain is served, whatever ``--chain`` says)."""
    amount = _amount(args.amount)
    check_fee_rate(args.fee_rate)
    if args.chain == "embedded" and not running:
        # Nothing else would ever mine it: the coins would stay reserved, the payment unmade.
        raise UserError("the embedded chain of a one-shot command forgets its mempool when the command exits: "
                        "serve the chain (`paychan regtest`, or `make run`) and give --chain URL")
    return amount


async def run_send(wallet: SqliteWallet, chain: Any, args: argparse.Namespace, out: Output) -> int:
    amount = check_send(args)
    try:
        sent = await send_coins(wallet, chain, args.address, amount, args.fee_rate)
    except SendError as e:
        raise UserError(str(e)) from None
    except InsufficientFunds as e:
        raise UserError(str(e)) from None
    emit_sent(out, {"txid": sent.txid_hex, "address": sent.address, "amount": sent.amount,
                    "amount_btc": btc(sent.amount), "fee": sent.fee})
    return 0


def emit_sent(out: Output, sent: dict[str, Any]) -> None:
    """What ``send`` says, made here or by the running server's API (the same fields)."""
    out.emit(f"sent {format_sat(int(sent['amount']))} to {sent['address']} in {sent['txid']}, fee {sent['fee']} sat",
             sent)
