"""
``twistd paychan``: the payment-channel server as a twistd service.

``Options`` parses and validates the command line (failing before anything starts);
``makeService`` returns a MultiService whose children, started in this order, open the chain
(the embedded regtest node in ``DATA_DIR/chain`` by default), the wallet (``--wallet``;
``DATA_DIR/wallet.sqlite`` by default), the channel store (``DATA_DIR/channels.sqlite``, or PostgreSQL with ``--store``) and the embedded
node's JSON-RPC, then run the channels and listen for clients and operator commands. They stop
in the reverse order, each after the one started after it has finished. The reactor is the one
twistd installed, passed to every child; nothing here imports it at module level.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from twisted_paychan import constants as C
from twisted_paychan.channel.settings import ServerSettings

if TYPE_CHECKING:  # the backends load only when the service starts (twistd lists plugins first)
    from twisted_paychan.bitcoin.addresses import Network
    from twisted_paychan.chain.embedded.chain import EmbeddedChain
    from twisted_paychan.chain.embedded.rpc.server import RpcServer
    from twisted_paychan.chain.rpc.chain import RpcChain
    from twisted_paychan.net.cluster import ClusterNode
    from twisted_paychan.net.server import PaymentChannelServerFactory
    from twisted_paychan.store.postgres import PostgresChannelStore
    from twisted_paychan.store.sqlite import SqliteChannelStore
    from twisted_paychan.wallet.backends import IServedWallet, IWalletBackendMaker


def _positive_float(name: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--{name} must be a number of seconds, not {value!r}") from None
        if not number > 0:
            raise ValueError(f"--{name} must be positive, not {value!r}")
        return number

    return parse


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise usage.UsageError(f"--{name} must be an integer, not {value!r}") from None
        if n < 0:
            raise usage.UsageError(f"--{name} must not be negative")
        return n

    return parse


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Serve bitcoinj-compatible payment channels (protocol versions 1 and 2)."

    optFlags = [
        ["verbose", "v", "Log every payment and RPC request too (debug lines)."],
        ["allow-insecure-permissions", None,
         "Start even if the data directory, the wallet or a secret file is accessible by group or others."],
        ["reuse-port", None,
         "Listen on --listen (tcp: or ssl:) with SO_REUSEPORT, so several servers share its port (doc/cluster.md)."],
    ]

    optParameters = [
        ["listen", None, "tcp:4242:interface=127.0.0.1", "Endpoint to accept channel clients on."],
        ["data-dir", None, "paychan-data", "Directory for the channel store, the wallet and the embedded chain."],
        ["chain", None, "embedded", "'embedded' (regtest node in this process) or a Bitcoin Core RPC URL."],
        ["rpc-listen", None, "tcp:18443:interface=127.0.0.1",
         "Where the embedded node serves Bitcoin Core's JSON-RPC ('none' to switch it off)."],
        ["min-channel", None, 100_000, "Smallest channel value accepted, in satoshis.", _positive_int("min-channel")],
        ["min-payment", None, C.DEFAULT_MIN_PAYMENT, "Size of the initial payment required, in satoshis.",
         _positive_int("min-payment")],
        ["versions", None, "1,2", "Protocol majors to speak: '1', '2' or '1,2' (a client asking for more gets the highest)."],
        ["time-window-min", None, C.DEFAULT_MIN_TIME_WINDOW, "Shortest channel lifetime granted, seconds.",
         _positive_int("time-window-min")],
        ["time-window-max", None, C.DEFAULT_MAX_TIME_WINDOW, "Longest channel lifetime granted, seconds.",
         _positive_int("time-window-max")],
        ["fee-rate", None, C.FEE_RATE_FLOOR, "Settlement fee rate, sat/kB (at least 1000).", _positive_int("fee-rate")],
        ["handshake-timeout", None, 30, "Seconds a client may take to open a channel.", _positive_int("handshake-timeout")],
        ["max-connections-per-address", None, 16,
         "Connections one client address may hold open at once (0: no limit).",
         _positive_int("max-connections-per-address")],
        ["max-handshakes-per-minute", None, 120,
         "Connections one client address may open per minute; more get ERROR and a close (0: no limit).",
         _positive_int("max-handshakes-per-minute")],
        ["prune-refused-after", None, 2 * 86400,
         "Seconds a channel whose contract the node refused is kept before it is pruned (if the chain "
         "does not know the contract then).", _positive_int("prune-refused-after")],
        ["rpc-cookie", None, None, "With --chain URL: the node's cookie file (bitcoind's .cookie)."],
        ["rpc-user", None, None, "With --chain URL: the RPC user (with --rpc-password-file)."],
        ["rpc-password-file", None, None,
         "With --chain URL: file whose first line is the RPC password (a password in the URL shows in ps)."],
        ["wallet-passphrase-file", None, None,
         "File whose first line is the wallet's passphrase: a new wallet is created encrypted, an encrypted one unlocked."],
        ["admin-listen", None, "default",
         "Endpoint for operator commands (paychan settle); default: unix socket DATA_DIR/admin.sock, 'none' to switch off."],
        ["handler", None, "log", "What the server does with each payment: NAME[:ARG] (see --help-handlers)."],
        ["wallet", None, "sqlite", "Where the server's keys are: NAME[:ARG] (see --help-wallets)."],
        ["store", None, "sqlite",
         "Where the channels are: 'sqlite' (DATA_DIR/channels.sqlite) or a postgresql:// URL (doc/cluster.md)."],
        ["store-password-file", None, None,
         "With --store postgresql://...: file whose first line is the database password (a password in the URL shows in ps)."],
        ["duty-takeover", None, 30.0,
         "With --store postgresql://...: seconds within which another node takes a dead node's channels' expiry duty.",
         _positive_float("duty-takeover")],
        ["node-id", None, None, "With --store postgresql://...: this node's name in the cluster (default: host-pid-random)."],
        ["api-listen", None, "tcp:8844:interface=127.0.0.1",
         "Endpoint of the HTTP API, metrics and dashboard ('none' to switch off; ssl:... for TLS); doc/api.md."],
        ["api-token-file", None, None,
         "File whose first line is the API's bearer token (default: a new one in DATA_DIR/api.cookie at each start)."],
        ["config", None, None, "TOML or INI file of these options (names without the dashes); the command line wins."],
        ["log-format", None, "text", "'text' (twistd's lines) or 'json' (one JSON object per line, to --logfile)."],
    ]

    def opt_help_handlers(self) -> None:
        """List the installed payment handlers (--handler) and exit."""
        from twisted_paychan.handlers import describe_installed

        print(describe_installed())
        raise SystemExit(0)

    def opt_help_wallets(self) -> None:
        """List the installed wallet backends (--wallet) and exit."""
        from twisted_paychan.wallet.backends import describe_installed

        print(describe_installed())
        raise SystemExit(0)

    def parseOptions(self, options: Optional[list[str]] = None) -> None:
        """The ``--config`` file first, then the command line over it (it wins). A mistake in
        the file is one line (not twistd's usage text: the command line was right)."""
        import sys

        from twisted_paychan.config import apply_config, config_path_in, read_config

        argv = sys.argv[1:] if options is None else list(options)
        path = config_path_in(argv)
        if path is not None:
            try:
                apply_config(self, path, read_config(path))
            except usage.UsageError as e:
                raise StartupRefused(str(e)) from None
        usage.Options.parseOptions(self, argv)

    def postOptions(self) -> None:
        if self["verbose"]:
            from twisted_paychan import logs

            logs.set_verbose()
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format is 'text' or 'json', not {self['log-format']!r}")
        twistd: Any = getattr(self, "parent", None)  # twistd's own options, which choose the observer
        if self["log-format"] == "json" and twistd is not None:
            from twisted_paychan.jsonlog import use_for_twistd

            use_for_twistd(twistd)
        if self["reuse-port"]:
            from twisted_paychan.net.reuseport import ReusePortUnsupported, check_reuse_port

            try:
                check_reuse_port(str(self["listen"]))
            except ReusePortUnsupported as e:
                raise usage.UsageError(str(e)) from None
        try:
            versions = frozenset(int(v) for v in str(self["versions"]).split(",") if v.strip())
        except ValueError:
            raise usage.UsageError(f"--versions must be like '1,2', not {self['versions']!r}") from None
        try:
            self["settings"] = ServerSettings(
                min_channel_size=self["min-channel"],
                min_payment=self["min-payment"],
                min_time_window=self["time-window-min"],
                max_time_window=self["time-window-max"],
                versions=versions,
                fee_rate=self["fee-rate"],
                handshake_timeout=float(self["handshake-timeout"]),
                max_connections_per_address=self["max-connections-per-address"],
                max_handshakes_per_address=self["max-handshakes-per-minute"],
                prune_after=float(self["prune-refused-after"]),
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if self["fee-rate"] < C.FEE_RATE_FLOOR:
            raise usage.UsageError(f"--fee-rate must be at least {C.FEE_RATE_FLOOR} sat/kB (the minimum relay fee)")
        chain = self["chain"]
        if chain != "embedded" and not chain.startswith(("http://", "https://")):
            raise usage.UsageError("--chain is 'embedded' or an http(s) RPC URL")
        if (self["rpc-user"] is None) != (self["rpc-password-file"] is None):
            raise usage.UsageError("--rpc-user and --rpc-password-file go together")
        if chain == "embedded" and any(self[o] is not None for o in ("rpc-cookie", "rpc-user", "rpc-password-file")):
            raise usage.UsageError("--rpc-cookie, --rpc-user and --rpc-password-file are for --chain URL")
        from twisted_paychan.handlers import HandlerArgumentError, choose

        try:
            self["handler-maker"] = choose(self["handler"])
        except HandlerArgumentError as e:
            raise usage.UsageError(f"--handler: {e}") from None
        from twisted_paychan.store.location import check_store_option, is_postgres

        bad_store = check_store_option(self["store"])
        if bad_store is not None:
            raise usage.UsageError(bad_store)
        if self["store-password-file"] is not None and not is_postgres(self["store"]):
            raise usage.UsageError("--store-password-file is for --store postgresql://...")
        if not is_postgres(self["store"]) and (self["node-id"] is not None or self["duty-takeover"] != 30.0):
            raise usage.UsageError("--node-id and --duty-takeover are for --store postgresql://... (doc/cluster.md)")
        from twisted_paychan.wallet import backends

        try:
            self["wallet-maker"] = backends.choose(self["wallet"])
        except backends.WalletArgumentError as e:
            raise usage.UsageError(f"--wallet: {e}") from None


def admin_endpoint(option: str, data_dir: str) -> Optional[str]:
    """The operator endpoint for ``--admin-listen`` (None when switched off)."""
    if option == "none":
        return None
    if option == "default":
        path = os.path.join(data_dir, "admin.sock")
        if os.path.exists(path):
            os.unlink(path)  # left behind by a crash; the store lock guards against two servers
        return f"unix:{path}:mode=600"
    return option


class _InOrder(service.MultiService):
    """A MultiService whose children stop one at a time, the last started first, each once the
    one after it has finished: a backend is closed only when nothing that uses it is running.
    (``MultiService`` itself asks them all to stop at once.) Twisted's service methods are
    called through their class, as Twisted does, which also keeps their calls typed."""

    log = Logger()

    def addService(self, child: service.IService) -> None:
        service.MultiService.addService(self, child)

    def removeService(self, child: service.IService) -> None:
        service.MultiService.removeService(self, child)

    def stopService(self) -> "defer.Deferred[None]":
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            try:
                await defer.maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("stopping {child} failed", child=child)


class StartupRefused(SystemExit):
    """The server will not start, for a reason the operator can fix (a wrong passphrase, a data
    directory others can read). A SystemExit, so that twistd ends with this one line and no
    traceback; raised before anything listens."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"paychan: not starting: {reason}")
        self.reason = reason


class ChainService(service.Service):
    """The chain: the embedded regtest node in ``DATA_DIR/chain``, or ``RpcChain`` on a URL,
    logged in with ``rpc_user`` and the password in ``rpc_password_file`` or with the cookie in
    ``rpc_cookie`` (or the URL's own credentials)."""

    def __init__(self, reactor: Any, data_dir: str, chain_arg: str, rpc_cookie: Optional[str] = None,
                 rpc_user: Optional[str] = None, rpc_password_file: Optional[str] = None) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.chain_arg = chain_arg
        self.rpc_cookie = rpc_cookie
        self.rpc_user = rpc_user
        self.rpc_password_file = rpc_password_file
        self.chain: Union[EmbeddedChain, RpcChain, None] = None
        #: The wallet's network: the chain's (``getblockchaininfo`` of a node; regtest embedded).
        self.network: Optional[Network] = None

    def _login(self) -> Optional[tuple[str, str]]:
        from twisted_paychan.secretfiles import SecretFileError, read_secret_file

        if self.rpc_user is None or self.rpc_password_file is None:
            return None
        try:
            return self.rpc_user, read_secret_file(self.rpc_password_file, "RPC password")
        except SecretFileError as e:
            raise StartupRefused(str(e)) from None

    def startService(self) -> None:
        from twisted_paychan import startup

        if self.chain_arg == "embedded":
            from twisted_paychan.bitcoin.addresses import REGTEST
            from twisted_paychan.chain.embedded.chain import EmbeddedChain
            from twisted_paychan.chain.embedded.datadir import DatadirInUse

            try:
                self.chain = EmbeddedChain.open(os.path.join(self.data_dir, "chain"), self.reactor)
            except DatadirInUse as e:
                raise StartupRefused(startup.in_use(self.data_dir, e)) from None
            self.network = REGTEST
        else:
            from twisted_paychan.chain.rpc.chain import RpcChain

            login = self._login()
            try:  # fail now, with the reason, rather than run on without a chain
                self.network = startup.probe_chain(self.chain_arg, self.rpc_cookie, login).network
            except startup.ChainUnusable as e:
                raise StartupRefused(str(e)) from None
            remote = RpcChain.from_url(self.reactor, self.chain_arg, cookie_path=self.rpc_cookie, credentials=login)
            remote.start()
            self.chain = remote
        service.Service.startService(self)

    def running_chain(self) -> Union[EmbeddedChain, RpcChain]:
        """The open chain; only while the service runs."""
        assert self.chain is not None, "the chain service has not started"
        return self.chain

    def stopService(self) -> "defer.Deferred[None]":
        from twisted_paychan.chain.embedded.chain import EmbeddedChain

        service.Service.stopService(self)
        chain, self.chain = self.chain, None
        if isinstance(chain, EmbeddedChain):
            chain.close()
        elif chain is not None:
            return chain.stop()
        return defer.succeed(None)


class NodeRpcServerService(service.Service):
    """Serves the embedded node over Bitcoin Core's JSON-RPC, so that clients, ``paychan``
    commands and other tools share this server's chain (cookie in ``DATA_DIR/chain``). A port
    that cannot be opened is logged, and the channel server runs without it."""

    log = Logger()

    def __init__(self, reactor: Any, chain: ChainService, listen: str, fee_rate: int) -> None:
        self.reactor = reactor
        self.chain = chain
        self.listen = listen
        self.fee_rate = fee_rate
        self.rpc: Optional[RpcServer] = None
        self._serving: "Optional[defer.Deferred[None]]" = None

    def startService(self) -> None:
        from twisted_paychan.chain.embedded.chain import EmbeddedChain
        from twisted_paychan.chain.embedded.rpc.server import serve_node

        from twisted_paychan import startup

        chain = self.chain.running_chain()
        assert isinstance(chain, EmbeddedChain), "only the embedded node is served"
        d = serve_node(self.reactor, chain.node, self.listen, fee_rate=self.fee_rate)
        refused = startup.failed_now(d)
        if refused is not None:  # a busy port: say so and stop, as for --listen
            reason = getattr(refused.value, "socketError", None) or refused.getErrorMessage()
            raise StartupRefused(f"cannot serve JSON-RPC on --rpc-listen {self.listen}: {reason}")

        def serving(server: RpcServer) -> None:
            self.rpc = server

        def failed(f: Any) -> None:
            self.log.failure("cannot serve JSON-RPC on {listen}", f, listen=self.listen)

        self._serving = d.addCallbacks(serving, failed)
        service.Service.startService(self)

    async def _stop(self) -> None:
        if self._serving is not None:
            await self._serving
        rpc, self.rpc = self.rpc, None
        if rpc is not None:
            await rpc.stop()

    def stopService(self) -> "defer.Deferred[None]":
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop())


class WalletService(service.Service):
    """The server's wallet, from the backend ``--wallet`` chose (``backend``: maker and ARG;
    by default ``sqlite``, ``DATA_DIR/wallet.sqlite``, encrypted under the passphrase in
    ``passphrase_file`` when one is given), following the chain while running."""

    log = Logger()

    def __init__(self, path: str, chain: ChainService, passphrase_file: Optional[str] = None,
                 backend: "Optional[tuple[IWalletBackendMaker, Optional[str]]]" = None, reactor: Any = None) -> None:
        self.path = path
        self.chain = chain
        self.passphrase_file = passphrase_file
        self.backend = backend
        self.reactor = reactor
        self.wallet: Optional[IServedWallet] = None

    def startService(self) -> None:
        from twisted_paychan.bitcoin.addresses import REGTEST
        from twisted_paychan.wallet.backends import SqliteBackendMaker, WalletUnusable, open_wallet

        try:
            wallet = open_wallet(self.backend or (SqliteBackendMaker(), None), os.path.dirname(self.path),
                                 self.chain.running_chain(), self.chain.network or REGTEST, self.passphrase_file,
                                 self.reactor)
        except WalletUnusable as e:
            raise StartupRefused(str(e)) from None
        wallet.start()
        self.wallet = wallet
        service.Service.startService(self)

    def stopService(self) -> None:
        service.Service.stopService(self)
        wallet, self.wallet = self.wallet, None
        if wallet is not None:
            wallet.close()


class StoreService(service.Service):
    """The channel store: ``DATA_DIR/channels.sqlite``, or with ``--store postgresql://...``
    the PostgreSQL store (reached and migrated before anything listens, its password from
    ``password_file``); stopping waits for it to be durable."""

    log = Logger()

    def __init__(self, reactor: Any, data_dir: str, store_arg: str = "sqlite",
                 password_file: Optional[str] = None, node_id: Optional[str] = None) -> None:
        self.reactor = reactor
        #: This server's name among the nodes sharing a PostgreSQL store (``net.cluster``).
        self.node_id = node_id
        #: The libpq string the PostgreSQL store was opened with (None for SQLite).
        self.conninfo: Optional[str] = None
        #: The wallet whose seed must be the cluster's (``net.cluster.check_cluster_seed``).
        self.wallet: Optional[WalletService] = None
        self.data_dir = data_dir
        self.store_arg = store_arg
        self.password_file = password_file
        self.store: Union[SqliteChannelStore, PostgresChannelStore, None] = None

    def startService(self) -> None:
        from twisted_paychan import startup
        from twisted_paychan.store.location import is_postgres

        if is_postgres(self.store_arg):
            self.store = self._open_postgres()
        else:
            from twisted_paychan.store.sqlite import StoreLocked, open_store

            try:
                self.store = open_store(self.data_dir, self.reactor)
            except StoreLocked as e:
                raise StartupRefused(startup.in_use(self.data_dir, e)) from None
        service.Service.startService(self)

    def _open_postgres(self) -> PostgresChannelStore:
        from twisted_paychan.secretfiles import SecretFileError, read_secret_file
        from twisted_paychan.store import location
        from twisted_paychan.store.postgres import PostgresChannelStore

        try:
            password = (read_secret_file(self.password_file, "store password")
                        if self.password_file is not None else None)
            info = location.conninfo(self.store_arg, password)
            location.probe_postgres(self.store_arg, info)  # fail now, with the reason
            if self.wallet is not None:  # before the store's thread exists: a refusal exits at once
                from twisted_paychan.net.cluster import check_cluster_seed

                check_cluster_seed(self.store_arg, info, self.wallet.wallet)
        except (SecretFileError, location.StoreUnusable) as e:
            raise StartupRefused(str(e)) from None
        self.log.info("channel store: PostgreSQL at {url}", url=location.masked(self.store_arg))
        if self.node_id is None:
            from twisted_paychan.net.cluster import new_node_id

            self.node_id = new_node_id()
        self.conninfo = info
        return PostgresChannelStore(info, self.reactor, self.node_id)

    def ready(self) -> "defer.Deferred[None]":
        """Fires once the store can take operations (at once for SQLite)."""
        from twisted_paychan.store.postgres import PostgresChannelStore

        store = self.store
        if not isinstance(store, PostgresChannelStore):
            return defer.succeed(None)
        waiting: "defer.Deferred[None]" = defer.Deferred()

        def passed(result: None) -> None:
            waiting.callback(None)

        def failed(f: Any) -> None:  # handed on to the one waiting, so not left unhandled here
            waiting.errback(f)

        store.ready.addCallbacks(passed, failed)
        return waiting

    def stopService(self) -> "defer.Deferred[None]":
        service.Service.stopService(self)
        store, self.store = self.store, None
        return store.close() if store is not None else defer.succeed(None)


class ChannelsService(_InOrder):
    """The channels: the server factory over the backends, its settle-before-expiry timers, and
    the endpoints it listens on (channel clients, then the operator socket) as children, which
    stop before the channels do."""

    log = Logger()

    def __init__(self, reactor: Any, options: Options, data_dir: str, chain: ChainService,
                 wallet: WalletService, store: StoreService) -> None:
        service.MultiService.__init__(self)
        self.reactor = reactor
        self.options = options
        self.data_dir = data_dir
        self.backends = (chain, wallet, store)
        self.factory: Optional[PaymentChannelServerFactory] = None
        self.cluster: Optional[ClusterNode] = None

    def startService(self) -> None:
        from twisted_paychan.net.server import PaymentChannelServerFactory

        chain, wallet, store = self.backends
        assert wallet.wallet is not None and store.store is not None, "backends start before the channels"
        o = self.options
        maker, handler_arg = o["handler-maker"]
        cluster = self._cluster(wallet, store)
        factory = PaymentChannelServerFactory(cluster.wallet if cluster else wallet.wallet, chain.running_chain(),
                                              store.store, o["settings"], self.reactor, maker.make(handler_arg, self.reactor))
        self.factory = factory
        if cluster is not None:
            cluster.attach(factory.manager)
        self.cluster = cluster
        for child in list(self):  # the listeners of an earlier run
            self.removeService(child)
        from twisted.internet.error import CannotListenError

        from twisted_paychan.startup import listen_now

        if o["api-listen"] != "none":
            self.addService(_api_service(self.reactor, o, self.data_dir, factory, chain, wallet, store))
        self.addService(listen_now(o["listen"], factory, self.reactor, reuse_port=bool(o["reuse-port"])))
        admin = admin_endpoint(o["admin-listen"], self.data_dir)
        if admin is not None:
            from twisted_paychan.net.admin import AdminFactory

            self.addService(listen_now(admin, AdminFactory(factory.manager), self.reactor))
        try:
            service.MultiService.startService(self)
        except CannotListenError as e:  # a busy port: one line, not a traceback
            option, value = ("--admin-listen", admin) if admin and str(e.port) in admin else ("--listen", o["listen"])
            raise StartupRefused(f"cannot listen on {option} {value}: {e.socketError}") from None
        # Re-arm the settle-before-expiry timers (once listening, and once the store can read).
        started = store.ready()
        if cluster is not None:
            started.addCallback(cluster.start)
        started.addCallback(lambda _: factory.manager.start())
        started.addErrback(lambda f: self.log.failure("loading the stored channels failed", f))

    def _cluster(self, wallet: WalletService, store: StoreService) -> Optional["ClusterNode"]:
        """With a PostgreSQL store, this server is one node of a cluster (``net.cluster``)."""
        from twisted_paychan.store.postgres import PostgresChannelStore

        if not isinstance(store.store, PostgresChannelStore) or store.node_id is None or store.conninfo is None:
            return None
        from twisted_paychan.net.cluster import ClusterNode

        assert wallet.wallet is not None
        return ClusterNode(store.store, wallet.wallet, self.reactor, store.node_id, self.options["duty-takeover"])

    async def _stop(self) -> None:
        await _InOrder.stopService(self)
        if self.cluster is not None:
            await self.cluster.stop()
        if self.factory is not None:
            self.factory.manager.stop()

    def stopService(self) -> "defer.Deferred[None]":
        return defer.ensureDeferred(self._stop())


def _api_service(reactor: Any, o: Options, data_dir: str, factory: "PaymentChannelServerFactory", chain: ChainService,
                 wallet: WalletService, store: StoreService) -> service.IService:
    """The HTTP API (``api.service``); a token file or port it cannot use refuses the start."""
    from twisted_paychan.api.service import ApiService

    def parts() -> Any:
        return factory.manager, wallet.wallet, chain.running_chain(), store.store

    return ApiService(reactor, o["api-listen"], data_dir, o["api-token-file"], parts, [o["listen"]], StartupRefused)


class ChannelServerService(_InOrder):
    """The whole server: the chain, the wallet, the channel store, the embedded node's JSON-RPC
    (if any) and the channels, as child services started in that order and stopped in the
    reverse one. ``reactor`` does all the I/O and timing."""

    log = Logger()

    def __init__(self, options: Options, reactor: Any) -> None:
        service.MultiService.__init__(self)
        self.options = options
        self.reactor = reactor
        self.data_dir = os.path.abspath(options["data-dir"])
        self.chain_service = ChainService(reactor, self.data_dir, options["chain"], options["rpc-cookie"],
                                          options["rpc-user"], options["rpc-password-file"])
        self.addService(self.chain_service)
        self.wallet_service = WalletService(
            os.path.join(self.data_dir, "wallet.sqlite"), self.chain_service, options["wallet-passphrase-file"],
            options.get("wallet-maker"), reactor,
        )
        self.addService(self.wallet_service)
        self.store_service = StoreService(reactor, self.data_dir, options["store"], options["store-password-file"],
                                          options["node-id"])
        self.store_service.wallet = self.wallet_service
        self.addService(self.store_service)
        self.rpc_service: Optional[NodeRpcServerService] = None
        if options["chain"] == "embedded" and options["rpc-listen"] != "none":
            self.rpc_service = NodeRpcServerService(reactor, self.chain_service, options["rpc-listen"], options["fee-rate"])
            self.addService(self.rpc_service)
        self.channels_service = ChannelsService(
            reactor, options, self.data_dir, self.chain_service, self.wallet_service, self.store_service
        )
        self.addService(self.channels_service)

    @property
    def chain(self) -> Union[EmbeddedChain, RpcChain, None]:
        return self.chain_service.chain

    @property
    def wallet(self) -> Optional[IServedWallet]:
        return self.wallet_service.wallet

    @property
    def store(self) -> Union[SqliteChannelStore, PostgresChannelStore, None]:
        return self.store_service.store

    @property
    def factory(self) -> Optional[PaymentChannelServerFactory]:
        return self.channels_service.factory

    @property
    def rpc(self) -> Optional[RpcServer]:
        return self.rpc_service.rpc if self.rpc_service is not None else None

    def _check_permissions(self) -> None:
        """Refuse, as ssh does, secrets that others could have read: they are no longer
        secret, and running on them would hide that."""
        from twisted_paychan.secretfiles import InsecurePermissions, check_private

        o = self.options
        private = [(self.data_dir, "the data directory"), (self.wallet_service.path, "the wallet")]
        private += [(o[name], f"the --{name}") for name in ("wallet-passphrase-file", "rpc-password-file", "rpc-cookie",
                                                           "store-password-file")
                    if o[name] is not None]
        try:
            for path, what in private:
                check_private(path, what)
        except InsecurePermissions as e:
            raise StartupRefused(str(e)) from None

    def startService(self) -> None:
        from twisted_paychan.secretfiles import private_directory

        private_directory(self.data_dir)
        if not self.options["allow-insecure-permissions"]:
            try:
                self._check_permissions()
            except StartupRefused as refused:
                _tell_daemon_parent(self.options, refused)
                raise
        try:
            service.MultiService.startService(self)
        except StartupRefused as refused:  # its one line reaches the log through twistd's stderr
            self.stopService()  # close what did start (the chain); nothing listens yet
            _tell_daemon_parent(self.options, refused)
            raise
        o = self.options
        from twisted_paychan.store.location import masked

        self.log.info("paychan server: data in {data_dir}, chain {chain}, store {store}, listening on {listen}",
                      data_dir=self.data_dir, chain=o["chain"], store=masked(o["store"]), listen=o["listen"])


def _tell_daemon_parent(options: Options, refused: StartupRefused) -> None:
    """A daemonized twistd's parent waits for a status on a pipe and says only "an unknown
    error" (or waits on) when the daemon exits without one: give it the reason, as twistd does
    for the exceptions it catches itself."""
    parent: Any = getattr(options, "parent", None)  # twistd's ServerOptions, holding the pipe once daemonized
    pipe = parent.get("statusPipe") if parent is not None else None
    if isinstance(pipe, int):
        try:
            os.write(pipe, b"1 " + str(refused.code).encode("utf-8", "replace")[:97])
            os.close(pipe)
        except OSError:
            pass
        parent["statusPipe"] = None


def makeService(options: Options) -> service.IService:
    """twistd's entry point: the reactor it has installed is the one the server runs on."""
    from twisted.internet import reactor

    from twisted_paychan.twisted_private import lighten_reactor

    lighten_reactor(reactor)  # no logging context per socket event (see twisted_private)
    return ChannelServerService(options, reactor)
