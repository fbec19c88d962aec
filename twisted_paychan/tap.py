"""
``twistd paychan``: the payment-channel server as a twistd service.

``Options`` parses and validates the command line (failing before anything starts);
``makeService`` returns a MultiService that, when started, opens the chain (the embedded
regtest node in ``DATA_DIR/chain`` by default), the wallet (``DATA_DIR/wallet.sqlite``) and the
channel store (``DATA_DIR/channels.sqlite``), then listens for channel clients.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.application import service, strports
from twisted.internet import reactor as global_reactor
from twisted.logger import Logger
from twisted.python import usage

from twisted_paychan import constants as C
from twisted_paychan.channel.settings import ServerSettings


def _positive_int(name: str):
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

    optFlags = [["verbose", "v", "Log every payment and RPC request too (debug lines)."]]

    optParameters = [
        ["listen", None, "tcp:4242:interface=127.0.0.1", "Endpoint to accept channel clients on."],
        ["data-dir", None, "paychan-data", "Directory for the channel store, the wallet and the embedded chain."],
        ["chain", None, "embedded", "'embedded' (regtest node in this process) or a Bitcoin Core RPC URL."],
        ["rpc-listen", None, "tcp:18443:interface=127.0.0.1",
         "Where the embedded node serves Bitcoin Core's JSON-RPC ('none' to switch it off)."],
        ["min-channel", None, 100_000, "Smallest channel value accepted, in satoshis.", _positive_int("min-channel")],
        ["min-payment", None, C.DEFAULT_MIN_PAYMENT, "Size of the initial payment required, in satoshis.",
         _positive_int("min-payment")],
        ["versions", None, "1,2", "Protocol majors to speak: '1', '2' or '1,2'."],
        ["time-window-min", None, C.DEFAULT_MIN_TIME_WINDOW, "Shortest channel lifetime granted, seconds.",
         _positive_int("time-window-min")],
        ["time-window-max", None, C.DEFAULT_MAX_TIME_WINDOW, "Longest channel lifetime granted, seconds.",
         _positive_int("time-window-max")],
        ["fee-rate", None, C.FEE_RATE_FLOOR, "Settlement fee rate, sat/kB (at least 1000).", _positive_int("fee-rate")],
        ["handshake-timeout", None, 30, "Seconds a client may take to open a channel.", _positive_int("handshake-timeout")],
        ["admin-listen", None, "default",
         "Endpoint for operator commands (paychan settle); default: unix socket DATA_DIR/admin.sock, 'none' to switch off."],
    ]

    def postOptions(self) -> None:
        if self["verbose"]:
            from twisted_paychan import logs

            logs.set_verbose()
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
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        chain = self["chain"]
        if chain != "embedded" and not chain.startswith(("http://", "https://")):
            raise usage.UsageError("--chain is 'embedded' or an http(s) RPC URL")


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


class ChannelServerService(service.MultiService):
    """Opens the backends when started, closes them when stopped."""

    log = Logger()

    def __init__(self, options: Options, reactor: Any = None) -> None:
        super().__init__()
        self.options = options
        self.reactor: Any = reactor or global_reactor
        self.chain: Any = None
        self.wallet: Any = None
        self.store: Any = None
        self.factory: Any = None
        self.rpc: Any = None

    def startService(self) -> None:
        from twisted_paychan.net.server import PaymentChannelServerFactory
        from twisted_paychan.store.sqlite import open_store
        from twisted_paychan.wallet.sqlite import SqliteWallet

        o = self.options
        data_dir = os.path.abspath(o["data-dir"])
        os.makedirs(data_dir, exist_ok=True)
        self.chain = self._open_chain(data_dir)
        self.wallet = SqliteWallet.open(os.path.join(data_dir, "wallet.sqlite"), self.chain)
        self.wallet.start()
        self.store = open_store(data_dir, self.reactor)
        self.factory = PaymentChannelServerFactory(self.wallet, self.chain, self.store, o["settings"], self.reactor)
        started = self.factory.manager.start()  # re-arm the settle-before-expiry timers
        started.addErrback(lambda f: self.log.failure("loading the stored channels failed", f))
        strports.service(o["listen"], self.factory).setServiceParent(self)
        admin = admin_endpoint(o["admin-listen"], data_dir)
        if admin is not None:
            from twisted_paychan.net.admin import AdminFactory

            strports.service(admin, AdminFactory(self.factory.manager)).setServiceParent(self)
        self.log.info("paychan server: data in {data_dir}, chain {chain}, listening on {listen}",
                      data_dir=data_dir, chain=o["chain"], listen=o["listen"])
        super().startService()

    def _open_chain(self, data_dir: str) -> Any:
        chain_arg = self.options["chain"]
        if chain_arg == "embedded":
            from twisted_paychan.chain.embedded.chain import EmbeddedChain

            embedded = EmbeddedChain.open(os.path.join(data_dir, "chain"), self.reactor)
            self._serve_rpc(embedded, data_dir)
            return embedded
        from twisted_paychan.rpc.client import RpcChain

        remote = RpcChain.from_url(self.reactor, chain_arg)
        remote.start()
        return remote

    def _serve_rpc(self, chain: Any, data_dir: str) -> None:
        """Serve the embedded node over Bitcoin Core's JSON-RPC, so that clients, ``paychan``
        commands and other tools share this server's chain (cookie in ``DATA_DIR/chain``)."""
        listen = self.options["rpc-listen"]
        if listen == "none":
            return
        from twisted_paychan.rpc.server import serve_node

        d = serve_node(self.reactor, chain.node, listen, fee_rate=self.options["fee-rate"])

        def serving(server: Any) -> None:
            self.rpc = server

        def failed(f: Any) -> None:
            self.log.failure("cannot serve JSON-RPC on {listen}", f, listen=listen)

        d.addCallbacks(serving, failed)

    async def _stop_backends(self) -> None:
        if self.factory is not None:
            self.factory.manager.stop()
        if self.rpc is not None:
            await self.rpc.stop()
        if self.store is not None:
            await self.store.close()
        if self.wallet is not None:
            self.wallet.stop()
            self.wallet.close()
        if self.chain is not None:
            closing = self.chain.close() if hasattr(self.chain, "close") else self.chain.stop()
            if closing is not None:
                await closing

    def stopService(self) -> Any:
        from twisted.internet import defer

        d = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: defer.ensureDeferred(self._stop_backends()))
        return d


def makeService(options: Options) -> service.IService:
    return ChannelServerService(options)
