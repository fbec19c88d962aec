"""
The API as a twistd child service (``--api-listen``, ``--api-token-file``).

At start it takes the token (from ``--api-token-file``, or a fresh one written to
``DATA_DIR/api.cookie``), hangs its instruments on the running manager and store (the
``ServerObserver`` hooks, the event subscribers), listens, and writes ``DATA_DIR/api.json`` with
the URL it actually got. At stop it ends the open event streams, stops listening, takes its
hooks off and removes the files it wrote.

A port that cannot be opened refuses the start, as a bad option would: an operator who asked
for an API would otherwise find out only when it does not answer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.http import Request
from twisted.web.server import Site

from twisted_paychan import logs
from twisted_paychan.api import auth
from twisted_paychan.api.events import EventLog
from twisted_paychan.api.health import DEFAULT_MAX_TIP_AGE, HealthCheck
from twisted_paychan.api.metrics import ServerMetrics
from twisted_paychan.api.resources import ApiContext, ApiResource, ApiRoot
from twisted_paychan.chain.interfaces import IChain, IWallet
from twisted_paychan.dashboard import dashboard_resources
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.store.interfaces import IChannelStore

DEFAULT_LISTEN = "tcp:8844:interface=127.0.0.1"


class ApiStartError(Exception):
    """The API cannot start (its token file, its port); the message says why."""


class ApiSite(Site):
    """A Site whose access log never shows a query string (it may carry ``access_token``)."""

    _log = Logger()
    noisy = False

    def __init__(self, resource: Resource) -> None:
        Site.__init__(self, resource)

    def log(self, request: Request) -> None:
        if not logs.verbose:  # a line per request only with --verbose, as per payment (``logs``)
            return
        self._log.debug("api: {method} {path} -> {code}", method=(request.method or b"").decode(errors="replace"),
                        path=(request.path or b"").decode(errors="replace"), code=request.code)


def _certificate(description: str) -> Optional[str]:
    """The certificate file of an ``ssl:`` endpoint description (certKey, else privateKey)."""
    for name in ("certKey", "privateKey"):
        found = re.search(rf"(?:^|:){name}=([^:]+)", description)
        if found is not None:
            return os.path.abspath(found.group(1))
    return None


def tracked_chain_problem(chain: object) -> Optional[Callable[[], Optional[str]]]:
    """The health seam for a chain that tracks its own (an ``RpcChain`` with a
    ``health_tracker``, ``chain.health``): its state and last failure when it is not OK. None for
    a chain that does not track one (the embedded node answers in process)."""
    tracker: Any = getattr(chain, "health_tracker", None)
    if tracker is None:
        return None

    def problem() -> Optional[str]:
        health: Any = tracker.health
        if health.ok:
            return None
        return f"{health.state.value}: {health.detail}" if health.detail else str(health.state.value)

    return problem


class Api:
    """The API over one running server's parts, not yet listening (tests use it directly)."""

    def __init__(self, reactor: Any, manager: ServerChannelManager, wallet: IWallet, chain: IChain,
                 store: IChannelStore, token: auth.Token, network: str = "regtest", listen: Optional[list[str]] = None,
                 chain_problem: Optional[Callable[[], Optional[str]]] = None,
                 extra: Optional[dict[bytes, Resource]] = None, data_dir: Optional[str] = None) -> None:
        self.reactor = reactor
        self.manager = manager
        self.metrics = ServerMetrics()
        self.events = EventLog(reactor)
        health = HealthCheck(store, wallet, chain, reactor, None if network == "regtest" else DEFAULT_MAX_TIP_AGE,
                             chain_problem if chain_problem is not None else tracked_chain_problem(chain))
        self.context = ApiContext(manager, wallet, reactor, self.events, self.metrics, health, token, network,
                                  listen or [], started_at=reactor.seconds(), data_dir=data_dir)
        self.site = ApiSite(ApiRoot(ApiResource(self.context), extra if extra is not None else dashboard_resources()))
        self.metrics.observe_store(store)
        self.metrics.observe_wallet(wallet)
        self._store = store
        manager.observer = self.metrics
        self._unsubscribe = [manager.subscribe(self.metrics.event), manager.subscribe(self.events.publish)]

    def close(self) -> None:
        """Take the hooks off the server and end the open event streams."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self.manager.observer is self.metrics:
            self.manager.observer = None
        if getattr(self._store, "sync_observer", None) is not None:
            setattr(self._store, "sync_observer", None)
        for stream in list(self.context.streams):
            stream.close()

    def listen(self, description: str) -> defer.Deferred[IListeningPort]:
        """Listen on a Twisted endpoint; the context learns its URL."""
        d: defer.Deferred[IListeningPort] = serverFromString(self.reactor, description).listen(self.site)

        def listening(port: IListeningPort) -> IListeningPort:
            self.context.api_url = url_of(description, port)
            return port

        return d.addCallback(listening)


def url_of(description: str, port: IListeningPort) -> str:
    address = port.getHost()
    host = str(getattr(address, "host", "127.0.0.1"))
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if description.startswith("ssl:") else "http"
    return f"{scheme}://{host}:{getattr(address, 'port', 0)}"


class ApiService(service.Service):
    """``--api-listen`` under twistd; ``parts`` gives the running manager, wallet, chain and store
    (they exist only once the services before this one have started)."""

    log = Logger()

    def __init__(self, reactor: Any, description: str, data_dir: str, token_file: Optional[str],
                 parts: Callable[[], tuple[ServerChannelManager, IWallet, IChain, IChannelStore]],
                 listen: Optional[list[str]] = None, refuse: Callable[[str], BaseException] = ApiStartError,
                 extra: Optional[dict[bytes, Resource]] = None) -> None:
        self.reactor = reactor
        self.description = description
        self.data_dir = data_dir
        self.token_file = token_file
        self.parts = parts
        self.listen = listen or []
        #: What a start that cannot happen raises (``twistd paychan``: its ``StartupRefused``).
        self.refuse = refuse
        #: Resources served beside the API without the token (``api.resources.ApiRoot``).
        self.extra = extra
        self.api: Optional[Api] = None
        self.port: Optional[IListeningPort] = None
        self._written: list[tuple[Path, str]] = []

    def _token(self) -> tuple[str, auth.Token]:
        if self.token_file is not None:
            try:
                return os.path.abspath(self.token_file), auth.read_token(self.token_file)
            except (OSError, ValueError) as e:
                raise self.refuse(f"cannot read the API token from {self.token_file}: {e}") from None
        path, token = auth.write_cookie(self.data_dir)
        self._written.append((path, token.value))
        return str(path), token

    def startService(self) -> None:
        token_path, token = self._token()
        manager, wallet, chain, store = self.parts()
        network = getattr(getattr(wallet, "network", None), "name", "regtest")
        api = Api(self.reactor, manager, wallet, chain, store, token, str(network), self.listen, extra=self.extra,
                  data_dir=self.data_dir)
        failures: list[str] = []
        ports: list[IListeningPort] = []
        api.listen(self.description).addCallbacks(ports.append, lambda f: failures.append(f.getErrorMessage()))
        if not ports:  # stream endpoints listen at once; anything else is refused rather than guessed at
            api.close()
            raise self.refuse(f"cannot listen for the API on {self.description}: "
                                f"{failures[0] if failures else 'no answer'}")
        self.api, self.port = api, ports[0]
        assert api.context.api_url is not None
        advertised = auth.Advertised(api.context.api_url, token_path,
                                     _certificate(self.description) if self.description.startswith("ssl:") else None,
                                     os.getpid())
        text = advertised.to_json()
        path = auth.write_advertised(self.data_dir, advertised)
        self._written.append((path, text))
        self.log.info("API on {url} (token in {token})", url=api.context.api_url, token=token_path)
        service.Service.startService(self)

    def stopService(self) -> "defer.Deferred[None]":
        service.Service.stopService(self)
        for path, content in self._written:
            auth.remove_if(path, content)
        self._written = []
        api, self.api = self.api, None
        if api is not None:
            api.close()
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        stopped: Any = port.stopListening()
        return stopped if isinstance(stopped, defer.Deferred) else defer.succeed(None)
