"""
What an ordinary mistake looks like from the command line: one line that names the problem
and what to do, and a non-zero exit status. A traceback is for bugs, or for ``--debug``.

Every command shares these: :func:`user_message` turns the library's exceptions into such a
line (None for a bug), :func:`check_data_dir` refuses a data directory that is missing (unless
``--create``), a file or not writable before anything is opened, so that a typo in a path does
not look like an empty wallet, and :func:`endpoint_problem` explains a ``--server`` that is not
an endpoint. ``main`` calls them; commands raise :class:`UserError` with what they add.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.cli.output import UserError
from twisted_paychan.constants import FEE_RATE_FLOOR

#: Commands that work on an existing data directory and create one only with ``--create``
#: (``paychan regtest`` is a node: it makes its own directory).
_NEEDS_DATA_DIR = frozenset({"wallet", "regtest-fund", "regtest-mine", "pay", "close", "watch", "settle"})
#: ``paychan wallet`` actions that make their own wallet where there is none.
_WALLET_CREATES = frozenset({"restore"})
#: ``paychan wallet`` actions on the wallet file alone, which open no chain.
_WALLET_FILE_ONLY = frozenset({"encrypt", "seed"})
#: Files a ``twistd paychan`` leaves in its data directory whatever its wallet backend: a
#: directory with one of them and no ``wallet.sqlite`` keeps its keys elsewhere (``signer:``;
#: ``balance`` and ``send`` then ask the running server's API, which ``api.json`` announces).
_SERVER_FILES = ("channels.sqlite", "api.cookie")


def check_data_dir(args: argparse.Namespace) -> None:
    """Refuse a ``--data-dir`` the command cannot use, before it opens or creates anything:
    missing without ``--create``, a file, not writable, or (with ``--chain embedded``) without
    an embedded chain unless ``--create`` asks for a private one."""
    command = getattr(args, "command", None)
    data_dir: Optional[str] = getattr(args, "data_dir", None)
    if command not in _NEEDS_DATA_DIR or data_dir is None:
        return
    create = bool(getattr(args, "create", False)) or getattr(args, "wallet_command", None) in _WALLET_CREATES
    path = Path(data_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--data-dir {data_dir} is a file, not a directory")
    if not path.exists():
        if not create:
            raise UserError(f"there is no data directory {data_dir}: check the path, or give --create to make a new one")
        return
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise UserError(f"--data-dir {data_dir} is not writable by this user: fix its permissions or choose another")
    through_api = getattr(args, "wallet_command", None) in ("balance", "send") and (path / "api.json").exists()
    if (command == "wallet" and not create and not through_api and not (path / "wallet.sqlite").exists()
            and any((path / name).exists() for name in _SERVER_FILES)):
        raise UserError(
            f"{data_dir} is a server's data directory with no wallet.sqlite: its keys are in another wallet "
            f"backend (--wallet, e.g. a remote signer), which paychan wallet does not open; give --create to "
            f"make a new, separate wallet there anyway"
        )
    if getattr(args, "wallet_command", None) in _WALLET_FILE_ONLY or command == "settle":
        return  # no chain is opened (``settle`` asks the running server, which has its own)
    if getattr(args, "chain", "embedded") == "embedded" and not (path / "chain").exists() and not create:
        raise UserError(
            f"{data_dir} holds no embedded chain: give --chain URL to use a running node (e.g. "
            f"--chain http://127.0.0.1:18443 --rpc-cookie SERVER_DATA/chain/.cookie), or --create to start "
            f"a private regtest chain in {data_dir}"
        )


def endpoint_problem(option: str, description: str, error: BaseException) -> UserError:
    """A ``--server``/``--listen`` string Twisted could not parse, explained."""
    text = description.strip()
    kind = text.split(":", 1)[0]
    if "://" in text:
        hint = f"{option} takes an endpoint, not a URL: write tcp:HOST:PORT"
    elif ":" not in text or kind.replace(".", "").isdigit() or kind in ("localhost",):
        hint = f"{option} needs the endpoint type first: tcp:{text}" if ":" in text else \
            f"{option} needs an endpoint like tcp:HOST:PORT"
    elif kind in ("tcp", "ssl", "tls") and text.count(":") < 2:
        hint = f"{option} {text!r} has no port: write {kind}:HOST:PORT"
    else:
        hint = f"{option} needs an endpoint like tcp:HOST:PORT or tls:HOST:PORT ({error})"
    return UserError(f"{option} {description!r} is not an endpoint: {hint}")


#: What each close reason means, in words, for the line a person reads.
_REASONS = {
    CloseReason.NO_ACCEPTABLE_VERSION: "the server speaks no protocol version we asked for (try --version)",
    CloseReason.TIME_WINDOW_UNACCEPTABLE: "the server's channel lifetime is not one we accept",
    CloseReason.SERVER_REQUESTED_TOO_MUCH_VALUE: "the server asks for more than this channel allows",
    CloseReason.CHANNEL_EXHAUSTED: "the channel is used up",
    CloseReason.CLIENT_REQUESTED_CLOSE: "we closed the channel",
    CloseReason.SERVER_REQUESTED_CLOSE: "the server closed the channel",
    CloseReason.REMOTE_SENT_ERROR: "the server sent an error",
    CloseReason.REMOTE_SENT_INVALID_MESSAGE: "the server sent something we cannot accept",
    CloseReason.CONNECTION_CLOSED: "the connection closed",
    CloseReason.UPDATE_PAYMENT_FAILED: "the server refused a payment",
}


def closed_in_words(error: ChannelClosed) -> str:
    """A closed channel's reason as a sentence, with what the machine said about it; a wallet
    that cannot fund the contract is said plainly, without the close code in front."""
    detail = error.detail
    marker = "insufficient funds"
    if marker in detail:
        return detail[detail.index(marker):]
    if "server wants at least" in detail:
        return (f"the server refused the channel: its minimum channel value is above --value "
                f"({detail}); give a larger --value")
    if "server wants a first payment" in detail:
        return f"the server requires a larger initial payment than we accept ({detail})"
    words = _REASONS.get(error.reason, error.reason.name)
    return f"{words}: {detail}" if detail else words


def user_message(error: BaseException) -> Optional[str]:
    """The message for an error the user can act on, or None for a bug."""
    from twisted.internet.error import CannotListenError, ConnectError, DNSLookupError

    from twisted_paychan.chain.embedded.datadir import DatadirInUse
    from twisted_paychan.chain.interfaces import InsufficientFunds
    from twisted_paychan.chain.types import BroadcastRejected, RejectKind
    from twisted_paychan.rpc.connection import RpcAuthError, RpcConnectionError, RpcProtocolError
    from twisted_paychan.net.failover import AllEndpointsFailed
    from twisted_paychan.rpc.errors import RpcError
    from twisted_paychan.store.sqlite import StoreLocked
    from twisted_paychan.wallet.errors import WalletError

    if isinstance(error, UserError):
        return error.message
    if isinstance(error, AllEndpointsFailed):
        return str(error)
    if isinstance(error, RpcError):
        return f"the node refused: {error.message} (code {error.code})"
    if isinstance(error, BroadcastRejected):
        if error.kind is RejectKind.UNREACHABLE:  # the node was never asked: say why, as before
            return error.reason
        return f"the node refused the transaction: {error.reason} (code {error.code})"
    if isinstance(error, InsufficientFunds):
        return f"insufficient funds: need {error.needed} sat, have {error.available} sat"
    if isinstance(error, ChannelClosed):
        return closed_in_words(error)
    if isinstance(error, StoreLocked):
        return f"{error}: another paychan process is using this data directory"
    if isinstance(error, CannotListenError):
        return f"cannot listen on {error.interface or '*'}:{error.port}: {error.socketError}"
    if isinstance(error, (ConnectError, ConnectionError, DNSLookupError)):
        return f"cannot connect: {error}"
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename or error}"
    if isinstance(error, (RpcConnectionError, RpcAuthError, RpcProtocolError, DatadirInUse, WalletError)):
        return str(error)
    return None


def check_fee_rate(fee_rate: int) -> None:
    """A ``--fee-rate`` below the relay floor would make a transaction no node relays: refused
    before anything is opened (``twistd paychan`` enforces the same floor)."""
    if fee_rate < FEE_RATE_FLOOR:
        raise UserError(f"--fee-rate must be at least {FEE_RATE_FLOOR} sat/kB (the minimum relay fee)")
