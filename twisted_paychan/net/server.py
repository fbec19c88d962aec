"""
The payment-channel server over TCP (or any stream endpoint): a Factory whose protocols frame
messages (``wire.framing``) and hand them to a :class:`ServerChannel`.

Construct it with the :class:`ServerChannelManager` that owns the channels (or with a wallet, a
chain, a channel store, :class:`ServerSettings` and a clock, and it makes one) and an
application handler factory; listen with ``endpoint.listen(factory)``. The handshake has a timeout
(``handshake_timeout``); an open channel may be given an idle timeout (``idle_timeout``).
Each peer address is limited (``net.address_limits``): a connection beyond
``max_connections_per_address`` open at once is closed unanswered, one beyond
``max_handshakes_per_address`` per ``rate_window`` gets ERROR{OTHER} and a close.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ServerSettings
from twisted_paychan.chain.interfaces import IChain, IWallet
from twisted_paychan.net.logfields import NO_PEER, peer_address
from twisted_paychan.net.server_channel import NullServerHandler, ServerChannel
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.store.interfaces import IChannelStore
from twisted_paychan.net.tcp import ChannelStreamProtocol, set_nodelay
from twisted_paychan.net.address_limits import AddressLimits, Refusal
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.framing import CloseKind
from twisted_paychan.wire.framing import ConnectionEnd


class ServerChannelProtocol(ChannelStreamProtocol):
    log = Logger()

    def __init__(self, factory: "PaymentChannelServerFactory", handler: Any, address: Optional[str] = None) -> None:
        super().__init__(clock=factory.clock, idleTimeout=factory.settings.handshake_timeout)
        self.factory = factory
        self.handler = handler
        #: The peer's address as counted by the factory's limits (None: not counted).
        self.address = address
        self.channel: Optional[ServerChannel] = None

    def connectionMade(self) -> None:
        set_nodelay(self.transport)
        self.channel = self.factory.manager.connection(self.handler, self.sendMessage, self._channel_closed)
        address = peer_address(self.transport)
        self.channel.peer = None if address == NO_PEER else address
        self.channel.on_open = self._channel_opened

    def _channel_opened(self) -> None:
        """The handshake timeout gives way to the (optional) idle timeout of an open channel."""
        if self.connected:
            self.setIdleTimeout(self.factory.settings.idle_timeout)

    def _channel_closed(self, reason: CloseReason) -> None:
        """The channel decided to close (its last ERROR or CLOSE is already written)."""
        self.disconnect(reason.name)

    def connectionClosing(self, reason: ConnectionEnd) -> None:
        # The wire layer closed (bad frame, idle timeout) or we did: tell the channel, which
        # ignores it if it asked for the close itself.
        if reason.kind is not CloseKind.LOCAL and self.channel is not None:
            self.channel.connection_lost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.address is not None:
            self.factory.limits.release(self.address)
            self.address = None
        if self.channel is not None:
            self.channel.connection_lost()


class RateLimitedProtocol(ChannelStreamProtocol):
    """Answers a peer over its handshake rate with ERROR{OTHER} and closes: the spec has no
    code for "busy" (§2.5), and a bitcoinj client closes on any ERROR."""

    def connectionMade(self) -> None:
        self.disconnect("RATE_LIMITED", m.error(m.ErrorCode.OTHER, "too many handshakes from this address; try later"))


class PaymentChannelServerFactory(Factory):
    """Serve payment channels. ``handler_factory(address)`` makes the application handler for
    each new connection (bitcoinj's ``HandlerFactory.onNewConnection``); None closes it."""

    noisy = False  # channel events are logged by the channels, with their contract txid

    def __init__(
        self,
        wallet: IWallet,
        chain: IChain,
        store: IChannelStore,
        settings: ServerSettings,
        clock: IReactorTime,
        handler_factory: Optional[Callable[[Optional[IAddress]], Any]] = None,
        manager: Optional[ServerChannelManager] = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.manager = manager or ServerChannelManager(wallet, chain, store, settings, clock)
        self.handler_factory = handler_factory or (lambda address: NullServerHandler())
        self.limits = AddressLimits(clock, settings.max_connections_per_address,
                                    settings.max_handshakes_per_address, settings.rate_window)

    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[ChannelStreamProtocol]:
        host: Optional[str] = getattr(addr, "host", None)  # IP peers only; others are not limited
        if host is not None:
            refusal = self.limits.admit(host)
            if refusal is Refusal.CONNECTIONS:
                return None
            if refusal is Refusal.HANDSHAKES:
                return RateLimitedProtocol(clock=self.clock, idleTimeout=self.settings.handshake_timeout)
        handler = self.handler_factory(addr)
        if handler is None:
            if host is not None:
                self.limits.release(host)
            return None
        return ServerChannelProtocol(self, handler, host)

    def stopFactory(self) -> None:
        self.limits.stop()
