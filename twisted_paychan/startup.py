"""
What ``twistd paychan`` checks as it starts, so that an operator's mistake stops it with one
line that names the problem, before anything listens, instead of a traceback or a server that
runs on without its chain.

* :func:`probe_chain`: the node behind ``--chain URL`` answers ``getblockchaininfo`` now
  (credentials as ``RpcChain`` takes them), and its ``chain`` field gives the wallet's network:
  a mainnet node gets a mainnet wallet, never a regtest one. It runs before the reactor does
  (twistd starts services first), so it may block, for at most ``timeout`` seconds.
* :func:`listen_now`: a ``strports`` service that raises at once when its port is busy.
* :func:`failed_now`: the failure of a Deferred that has already failed, taken from it.
* :func:`in_use`: the one line for a data directory another server holds.

Each raises or returns :class:`~twisted_paychan.tap.StartupRefused`'s reason as a plain string
(``tap`` wraps it), so this module does not import ``tap``.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import unquote, urlsplit, urlunsplit

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure

from twisted_paychan.bitcoin.addresses import MAINNET, REGTEST, TESTNET, Network

#: Core's chain names -> address parameters (``getblockchaininfo``'s ``chain`` field).
NETWORK_OF_CHAIN = {"main": MAINNET, "test": TESTNET, "testnet4": TESTNET, "signet": TESTNET, "regtest": REGTEST}


class ChainUnusable(Exception):
    """The node cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class ChainInfo:
    name: str
    network: Network
    height: int


def _authorization(url: str, cookie: Optional[str], login: Optional[tuple[str, str]]) -> Optional[str]:
    parts = urlsplit(url)
    if login is not None:
        user, password = login
    elif parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
    elif cookie is not None:
        try:
            user, _, password = Path(cookie).read_text().strip().partition(":")
        except OSError as e:
            raise ChainUnusable(f"cannot read the RPC cookie {cookie}: {e.strerror}") from None
    else:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def probe_chain(url: str, cookie: Optional[str] = None, login: Optional[tuple[str, str]] = None,
                timeout: float = 10.0) -> ChainInfo:
    """Ask the node at ``url`` which chain it follows; :class:`ChainUnusable` if it cannot be
    reached, refuses the credentials, or follows a chain we do not know."""
    parts = urlsplit(url)
    bare = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/", "", ""))
    request = urllib.request.Request(
        bare, method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"jsonrpc": "1.0", "id": "paychan", "method": "getblockchaininfo", "params": []}).encode())
    authorization = _authorization(url, cookie, login)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    where = f"the node at {bare}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            reply: Any = json.loads(answer.read())
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise ChainUnusable(f"{where} refused the RPC credentials (check --rpc-cookie, or --rpc-user "
                                "with --rpc-password-file)") from None
        raise ChainUnusable(f"{where} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise ChainUnusable(f"cannot reach {where}: {reason}") from None
    except ValueError:
        raise ChainUnusable(f"{where} does not speak Bitcoin Core's JSON-RPC") from None
    if not isinstance(reply, dict) or reply.get("error") or not isinstance(reply.get("result"), dict):
        raise ChainUnusable(f"{where} refused getblockchaininfo: {reply.get('error') if isinstance(reply, dict) else reply}")
    name = reply["result"].get("chain")
    network = NETWORK_OF_CHAIN.get(name) if isinstance(name, str) else None
    if network is None:
        raise ChainUnusable(f"{where} follows an unknown chain {name!r}")
    return ChainInfo(str(name), network, int(reply["result"].get("blocks", 0)))


class _ListenNow(StreamServerEndpointService):
    """Raises ``CannotListenError`` from ``startService`` (a busy port) instead of logging it
    and running on without the port; stopping it after that is a no-op."""

    _raiseSynchronously = True

    def __init__(self, endpoint: Any, factory: Any) -> None:
        StreamServerEndpointService.__init__(self, endpoint, factory)

    def stopService(self) -> "Optional[defer.Deferred[None]]":
        if self._waitingForPort is None:  # the listen failed: there is no port to close
            service.Service.stopService(self)
            return None
        d: "defer.Deferred[None]" = StreamServerEndpointService.stopService(self)
        return d


def listen_now(description: str, factory: Any, reactor: Any, reuse_port: bool = False) -> StreamServerEndpointService:
    """``strports.service``, except that a busy port fails its start at once; ``reuse_port``
    shares the port with other processes (``net.reuseport``)."""
    if reuse_port:
        from twisted_paychan.net.reuseport import reuse_port_endpoint

        return _ListenNow(reuse_port_endpoint(reactor, description), factory)
    return _ListenNow(serverFromString(reactor, description), factory)


def failed_now(d: "defer.Deferred[Any]") -> Optional[Failure]:
    """The failure ``d`` has already, taken from it (so it is not logged as unhandled later);
    None if it has not failed (yet)."""
    caught: list[Failure] = []

    def take(f: Failure) -> None:
        caught.append(f)

    if d.called:
        d.addErrback(take)
    return caught[0] if caught else None


def in_use(data_dir: Union[str, Path], error: BaseException) -> str:
    return (f"{data_dir} is in use by another paychan process ({error}); one server per data directory: "
            "stop the other one, or give this one its own --data-dir")
