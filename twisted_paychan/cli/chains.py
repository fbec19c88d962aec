"""
What ``--chain`` names, opened for one command.

* ``embedded``: the embedded regtest node of ``--data-dir`` (in ``DATA_DIR/chain``, where the
  channel server keeps it too), opened in this process; it must not be in use by a running
  ``paychan regtest`` or channel server.
* ``http://[user:password@]host:port``: any Bitcoin Core-compatible JSON-RPC server (bitcoind,
  ``paychan regtest``, the channel server's); credentials from ``--rpc-user`` with
  ``--rpc-password-file``, the URL (which warns: argv is public), ``--rpc-cookie``, or
  ``DATA_DIR/chain/.cookie`` when that exists.

Either way the command gets a :class:`ChainAccess`: an IChain for the wallet, the network, and
``call(method, *params)`` for node RPCs (mining, funding), which for the embedded node runs the
same method table as the RPC server, in-process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.defer import Deferred, succeed

from twisted_paychan import startup
from twisted_paychan.bitcoin.addresses import REGTEST, Network
from twisted_paychan.cli.output import UserError
from twisted_paychan.rpc import jsonenc
from twisted_paychan.rpc.auth import COOKIE_FILE

#: The embedded node's directory inside a data directory (the channel server's layout: the
#: node and its cookie in ``chain/``, ``wallet.sqlite`` and ``channels.sqlite`` beside it).
CHAIN_DIR = "chain"

#: Core's chain names -> address parameters (one table, shared with the server's start-up).
NETWORK_OF_CHAIN = startup.NETWORK_OF_CHAIN


@dataclass
class ChainAccess:
    chain: Any  # IChain
    network: Network
    chain_name: str
    #: ``await call("getblockcount")``: a node RPC, results as JSON (amounts as Decimal).
    call: Callable[..., Awaitable[Any]]
    #: How to name the chain in messages.
    description: str
    close: Callable[[], "Deferred[None]"]


def node_directory(data_dir: str) -> Path:
    return Path(data_dir) / CHAIN_DIR


def rpc_login(args: Any) -> Optional[tuple[str, str]]:
    """``--rpc-user`` with the password in ``--rpc-password-file`` (both or neither), so that
    no password is in argv."""
    user: Optional[str] = getattr(args, "rpc_user", None)
    password_file: Optional[str] = getattr(args, "rpc_password_file", None)
    if user is None and password_file is None:
        return None
    if user is None or password_file is None:
        raise UserError("--rpc-user and --rpc-password-file go together")
    from twisted_paychan.secretfiles import SecretFileError, read_secret_file

    try:
        return user, read_secret_file(password_file, "RPC password")
    except SecretFileError as e:
        raise UserError(str(e)) from None


async def open_chain(
    reactor: Any,
    chain: str,
    data_dir: Optional[str],
    rpc_cookie: Optional[str],
    login: Optional[tuple[str, str]] = None,
) -> ChainAccess:
    if chain == "embedded":
        if login is not None or rpc_cookie is not None:
            raise UserError("--rpc-user, --rpc-password-file and --rpc-cookie are for --chain URL")
        return _open_embedded(reactor, data_dir)
    if chain.startswith(("http://", "https://")):
        return await _open_rpc(reactor, chain, data_dir, rpc_cookie, login)
    raise UserError(f"--chain must be 'embedded' or an RPC URL like http://127.0.0.1:18443, not {chain!r}")


def _open_embedded(reactor: Any, data_dir: Optional[str]) -> ChainAccess:
    if data_dir is None:
        raise UserError("--chain embedded needs --data-dir (the node's data directory)")
    from twisted_paychan.chain.embedded.chain import EmbeddedChain
    from twisted_paychan.chain.embedded.datadir import DatadirInUse
    from twisted_paychan.chain.embedded.rpc.methods import NodeMethods

    node_dir = node_directory(data_dir)
    try:
        embedded = EmbeddedChain.open(node_dir, reactor)
    except DatadirInUse as e:
        raise UserError(
            f"{e}. If `paychan regtest` or a channel server runs on it, reach it over RPC instead: "
            f"--chain http://127.0.0.1:18443 --rpc-cookie {node_dir / COOKIE_FILE}"
        ) from None
    methods = NodeMethods(embedded.node)

    async def call(method: str, *params: Any) -> Any:
        # The same method table as the server, and the same JSON round trip.
        return jsonenc.loads(jsonenc.dumps(methods.dispatch(method, list(params))))

    def close() -> "Deferred[None]":
        embedded.close()
        return succeed(None)

    return ChainAccess(embedded, REGTEST, "regtest", call, f"the embedded node in {data_dir}", close)


async def _open_rpc(
    reactor: Any, url: str, data_dir: Optional[str], rpc_cookie: Optional[str], login: Optional[tuple[str, str]]
) -> ChainAccess:
    from urllib.parse import urlsplit

    from twisted_paychan.chain.rpc.chain import RpcChain

    if urlsplit(url).password:  # the connection logs this too, but a command has no log to read
        sys.stderr.write(
            "paychan: warning: the --chain URL carries a password, which every user of this machine can see "
            "in the process list; use --rpc-user with --rpc-password-file, or --rpc-cookie\n"
        )
    cookie: Optional[Path] = Path(rpc_cookie) if rpc_cookie else None
    if cookie is None and login is None and urlsplit(url).username is None and data_dir is not None:
        candidate = node_directory(data_dir) / COOKIE_FILE
        if candidate.exists():
            cookie = candidate
    try:
        chain = RpcChain.from_url(reactor, url, cookie_path=cookie, credentials=login)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        name = await chain.chain_name()
    except BaseException:
        await chain.stop()
        raise
    network = NETWORK_OF_CHAIN.get(name)
    if network is None:
        await chain.stop()
        raise UserError(f"{chain.connection.name} is on an unknown chain {name!r}")

    async def call(method: str, *params: Any) -> Any:
        return await chain.connection.call(method, *params)

    return ChainAccess(chain, network, name, call, f"the node at {chain.connection.name}", chain.stop)
