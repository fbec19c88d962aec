"""
The payment-channel client over TCP (or any stream endpoint).

``connect`` returns a Deferred of a :class:`ClientConnection` once CHANNEL_OPEN arrives, for a
new channel or a stored one it resumed. A client whose version selector allows version 1 goes
on in version 1 on the same connection when the server answers SERVER_VERSION with major 1
(ours does when it speaks only v1, §3.3 step 3). It reconnects once asking for version 1 when
the server drops the connection right after a version-2 CLIENT_VERSION (a v1-only bitcoinj
server does exactly that, recording ``c2``), or when the server answers 1 to the resume of a
stored version-2 channel, which is not resumed in another version (§9.1 item 6).

Which stored channel to resume (§9.1): one for this server id, in the requested version, not
settled, with value left, not past its expiry, and not in use by another connection of this
process. [Recommended] a channel whose resume the server refused is free again at once.
"""

from __future__ import annotations

import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union, cast, overload

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_paychan import constants as C
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.store.interfaces import IChannelStore
from twisted_paychan.chain.interfaces import IChain, ISigner, IWallet
from twisted_paychan.net.logfields import peer_address
from twisted_paychan.net.client_channel import ChannelOpen, ClientChannel, PaymentAck, Settlement
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.net.tcp import ChannelStreamProtocol, set_nodelay
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState
from twisted_paychan.wire.framing import CloseKind
from twisted_paychan.wire.framing import ConnectionEnd

if TYPE_CHECKING:
    from twisted_paychan.net.failover import FailoverConnection

#: Contract txids of channels in use by a connection of this process (bitcoinj's "active").
_ACTIVE: set[bytes] = set()

#: Channel keys taken for a new channel whose connection was never made (no byte reached a
#: server, so the key was never shown), by wallet: the next new channel of that wallet takes one
#: of these before asking for a fresh key. A fail-over tries endpoint after endpoint, and each
#: dead one would otherwise cost a key the wallet stores and follows for ever.
_UNUSED_KEYS: "weakref.WeakKeyDictionary[IWallet, list[ISigner]]" = weakref.WeakKeyDictionary()


class ClientChannelProtocol(ChannelStreamProtocol):
    log = Logger()

    def __init__(self, channel_factory: Any, clock: IReactorTime, handshake_timeout: float) -> None:
        super().__init__(clock=clock, idleTimeout=handshake_timeout)
        self._channel_factory = channel_factory
        self.channel: Optional[ClientChannel] = None
        #: Why the connection closed, from the channel's point of view.
        self.close_reason: Optional[CloseReason] = None

    def connectionMade(self) -> None:
        set_nodelay(self.transport)
        self.channel = self._channel_factory(self.sendMessage, self._channel_closed)
        self.channel.peer = peer_address(self.transport)
        self.channel.opened.addCallback(self._opened)  # connect() awaits it, failures included
        self.channel.start()

    def _opened(self, opened: ChannelOpen) -> ChannelOpen:
        self.setIdleTimeout(None)
        return opened

    def _channel_closed(self, reason: CloseReason) -> None:
        self.close_reason = reason
        self.disconnect(reason.name)

    def connectionClosing(self, reason: ConnectionEnd) -> None:
        if reason.kind is not CloseKind.LOCAL and self.channel is not None:
            self.channel.connection_lost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.channel is not None:
            self.channel.connection_lost()


class ClientConnection:
    """An open channel on a live connection: pay, settle, or disconnect and resume later."""

    def __init__(self, protocol: ClientChannelProtocol, opened: ChannelOpen) -> None:
        self.protocol = protocol
        assert protocol.channel is not None
        self.channel: ClientChannel = protocol.channel
        self.contract_txid = opened.contract_txid
        self.resumed = opened.resumed

    @property
    def record(self) -> Optional[ClientChannelRecord]:
        return self.channel.record

    def pay(self, amount: int, info: Optional[bytes] = None) -> defer.Deferred[PaymentAck]:
        return self.channel.pay(amount, info)

    def settle(self) -> defer.Deferred[Settlement]:
        return self.channel.settle()

    def disconnect(self) -> None:
        """Close without settling; the channel stays stored and can be resumed."""
        self.channel.disconnect()


async def find_resumable(
    store: IChannelStore, server_id: bytes, version: int, now: int, only: Optional[bytes] = None
) -> Optional[ClientChannelRecord]:
    """``only``: that channel or none (a fail-over resumes the channel it was paying on)."""
    records: list[ClientChannelRecord] = await store.client_channels(ClientChannelState.OPEN)
    for record in records:
        if (
            (only is None or record.contract_txid == only)
            and record.server_id == server_id
            and record.version == version
            and record.state is ClientChannelState.OPEN
            and record.client_change > 0
            and record.expiry - C.SERVER_SETTLE_OFFSET > now  # the server settles from E - 7200 on
            and record.contract_txid not in _ACTIVE
        ):
            return record
    return None


async def _attempt(
    reactor: Any, endpoint: IStreamClientEndpoint, wallet: IWallet, store: IChannelStore, manager: ClientChannelManager,
    settings: ClientSettings, server_id: bytes, signer: Optional[ISigner], protocol_class: type,
    only: Optional[bytes] = None,
) -> tuple[Optional[ClientConnection], Optional[ClientChannelProtocol]]:
    now = int(reactor.seconds())
    resume = await find_resumable(store, server_id, settings.versions.requested_major, now, only)
    if only is not None and resume is None:
        from twisted_paychan.net.failover import NotResumable

        raise NotResumable(only)
    if resume is not None:
        _ACTIVE.add(resume.contract_txid)
    fresh: Optional[ISigner] = None
    if resume is not None and (signer is None or signer.public_key != resume.client_key):
        signer = wallet.signer_for(resume.client_key)  # the key the stored channel was made with
    elif signer is None:
        unused = _UNUSED_KEYS.get(wallet)
        signer = unused.pop() if unused else await wallet.new_channel_key()
        fresh = signer

    def make_channel(send: Any, close: Any) -> ClientChannel:
        channel = manager.new_connection(settings, server_id, signer, send, close, resume)
        if only is not None:
            from twisted_paychan.net.failover import resume_only

            resume_only(channel)
        return channel

    factory = Factory.forProtocol(lambda: protocol_class(make_channel, reactor, settings.handshake_timeout))
    try:
        protocol = cast(ClientChannelProtocol, await endpoint.connect(factory))
    except Exception:
        if resume is not None:
            _ACTIVE.discard(resume.contract_txid)
        if fresh is not None:
            _UNUSED_KEYS.setdefault(wallet, []).append(fresh)
        raise
    assert protocol.channel is not None
    channel = protocol.channel
    try:
        opened = await channel.opened
    except ChannelClosed:
        if resume is not None:
            _ACTIVE.discard(resume.contract_txid)
        if only is not None:
            from twisted_paychan.net.failover import check_resume_refused

            check_resume_refused(channel, only)
        if channel.machine.major is None and channel.close_reason in (
            CloseReason.CONNECTION_CLOSED, CloseReason.REMOTE_SENT_ERROR
        ):
            # Closed before SERVER_VERSION: a v1-only server (bitcoinj's ERROR is lost and we
            # see EOF; a server that sends a readable ERROR{NO_ACCEPTABLE_VERSION} instead, as
            # ours did before it offered a lower major, ends it as REMOTE_SENT_ERROR). The
            # caller may retry with v1.
            return None, protocol
        if resume is not None and channel.close_reason is CloseReason.NO_ACCEPTABLE_VERSION:
            # The server answered a lower major than our stored channel's, and we do not resume
            # a channel in another version (§9.1 item 6): the caller may retry with v1, which
            # offers a v1 channel or opens a new one.
            return None, protocol
        raise
    if resume is not None and opened.contract_txid != resume.contract_txid:
        _ACTIVE.discard(resume.contract_txid)  # refused resume: the old channel is free again
    _ACTIVE.add(opened.contract_txid)

    def release(_: Any) -> None:
        _ACTIVE.discard(opened.contract_txid)

    channel.closed.addBoth(release)
    return ClientConnection(protocol, opened), protocol


@overload
def connect(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    wallet: IWallet,
    chain: IChain,
    store: IChannelStore,
    settings: ClientSettings,
    server_id: bytes,
    signer: Optional[ISigner] = None,
    *,
    protocol_class: type = ClientChannelProtocol,
    manager: Optional[ClientChannelManager] = None,
) -> defer.Deferred[ClientConnection]: ...


@overload
def connect(
    reactor: Any,
    endpoint: Sequence[IStreamClientEndpoint],
    wallet: IWallet,
    chain: IChain,
    store: IChannelStore,
    settings: ClientSettings,
    server_id: bytes,
    signer: Optional[ISigner] = None,
    *,
    protocol_class: type = ClientChannelProtocol,
    manager: Optional[ClientChannelManager] = None,
) -> defer.Deferred["FailoverConnection"]: ...


def connect(
    reactor: Any,
    endpoint: Union[IStreamClientEndpoint, Sequence[IStreamClientEndpoint]],
    wallet: IWallet,
    chain: IChain,
    store: IChannelStore,
    settings: ClientSettings,
    server_id: bytes,
    signer: Optional[ISigner] = None,
    *,
    protocol_class: type = ClientChannelProtocol,
    manager: Optional[ClientChannelManager] = None,
) -> defer.Deferred[Any]:
    """Open (or resume) a channel to the server at ``endpoint``; see the module docstring.
    ``signer`` is the client channel key; None takes the stored channel's key for a resume and
    a fresh wallet key for a new channel. ``protocol_class`` (a :class:`ClientChannelProtocol` subclass) lets a test or an embedding
    application change how frames are written. ``manager`` owns the channel once it is stored
    or resumed (an application passes its own; without one, a manager that follows only this
    connection's channel is made for it).

    ``endpoint`` may be a list of the endpoints of servers that share one database: the
    Deferred then fires with a :class:`~twisted_paychan.net.failover.FailoverConnection`, which
    resumes the channel on the next endpoint when its connection drops (``net/failover``)."""
    if manager is None:
        manager = ClientChannelManager(wallet, chain, store, reactor)
    if not IStreamClientEndpoint.providedBy(endpoint):
        from twisted_paychan.net.failover import FailoverConnection

        return FailoverConnection.open(reactor, list(endpoint),
                                       wallet, store, manager, settings, server_id, signer, protocol_class)
    return defer.ensureDeferred(open_channel(reactor, endpoint, wallet, store, manager,
                                             settings, server_id, signer, protocol_class))


async def open_channel(
    reactor: Any, endpoint: IStreamClientEndpoint, wallet: IWallet, store: IChannelStore,
    manager: ClientChannelManager, settings: ClientSettings, server_id: bytes, signer: Optional[ISigner],
    protocol_class: type, only: Optional[bytes] = None,
) -> ClientConnection:
    """One endpoint's part of :func:`connect`; ``only`` resumes that channel or fails."""
    connection, protocol = await _attempt(reactor, endpoint, wallet, store, manager, settings, server_id, signer,
                                          protocol_class, only)
    if connection is not None:
        return connection
    assert protocol is not None and protocol.channel is not None
    if settings.versions is VersionSelector.VERSION_2_ALLOW_1:
        v1 = replace(settings, versions=VersionSelector.VERSION_1)
        connection, protocol = await _attempt(reactor, endpoint, wallet, store, manager, v1, server_id, signer,
                                              protocol_class, only)
        if connection is not None:
            return connection
    assert protocol is not None
    raise ServerDidNotAnswer(protocol.close_reason or CloseReason.CONNECTION_CLOSED, "server closed before answering")


class ServerDidNotAnswer(ChannelClosed):
    """The server closed before answering CLIENT_VERSION: nothing was funded or stored."""
