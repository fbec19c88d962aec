"""
Fail-over for clients: one channel, several servers that share one database (``doc/cluster.md``).

``connect()`` given a list of endpoints opens (or resumes) the channel on the first that answers
and returns a :class:`FailoverConnection`. When that connection drops (``CONNECTION_CLOSED``:
EOF, a reset, no reply within ``reply_timeout``), the next ``pay()`` or ``settle()`` first resumes
the same channel on the next endpoint, round robin, then goes on. Payments in flight at the drop
fail with ``ChannelClosed`` as they do on one server: not acknowledged, so not counted; the
client stored their c before they left, so the server has them already or receives them with the
first payment after the resume (``net/pipelined`` and ``tests/e2e/test_kill_pipelined.py``).

Bounded: a round tries every endpoint once, starting after the one that dropped; between rounds
the client waits on the reactor's clock (:class:`Backoff`: 0.5 s, doubling, at most 8 s), and
after ``Backoff.rounds`` rounds :class:`AllEndpointsFailed` says what each endpoint answered. A
resume followed by no acknowledged payment before the next drop counts toward the same budget,
so servers that take the resume and drop every payment (each lost payment costs its amount)
cannot keep the client going round forever.

A fail-over never opens a new channel: the resume names its channel (``find_resumable(only=)``),
and a server that does not know it (not on the same database) and offers a new one instead is
refused before anything is funded, by a wallet that funds nothing (:func:`resume_only`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Sequence, cast

from twisted.internet import defer, task
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_paychan.chain.interfaces import ISigner, IWallet
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.records import ClientChannelRecord
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.client_channel import ClientChannel, PaymentAck, Settlement
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.store.interfaces import IChannelStore

if TYPE_CHECKING:
    from twisted_paychan.net.client import ClientChannelProtocol, ClientConnection

log = Logger()

#: Errors of an endpoint that cannot be reached at all: the next one is tried.
TRANSPORT_ERRORS = (ConnectError, ConnectionError, DNSLookupError, TimeoutError, ConnectingCancelledError)

#: Said by the wallet of a fail-over resume when the server offers a new channel instead.
_NO_NEW_CHANNEL = "a fail-over resumes its channel and never opens a new one"


@dataclass(frozen=True)
class Backoff:
    """How long a client goes on trying the endpoints before it gives up."""

    #: Seconds waited after the first round in which every endpoint failed.
    first: float = 0.5
    factor: float = 2.0
    #: The longest wait between two rounds.
    most: float = 8.0
    #: Rounds of every endpoint before :class:`AllEndpointsFailed`.
    rounds: int = 4

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.first < 0 or self.most < 0 or self.factor < 1:
            raise ValueError("Backoff needs rounds >= 1, factor >= 1 and waits not negative")

    def wait(self, failed_rounds: int) -> float:
        """Seconds to wait after ``failed_rounds`` (>= 1) rounds that all failed."""
        return float(min(self.most, self.first * self.factor ** (failed_rounds - 1)))


class AllEndpointsFailed(Exception):
    """No endpoint gave the channel within the rounds allowed; ``failures`` holds the last
    answer of each endpoint, by name."""

    def __init__(self, failures: Sequence[tuple[str, str]], rounds: int) -> None:
        self.failures = list(failures)
        self.rounds = rounds
        said = "; ".join(f"{name}: {why}" for name, why in self.failures)
        super().__init__(f"every server failed ({rounds} round{'s' if rounds != 1 else ''} of "
                         f"{len(self.failures)} endpoint{'s' if len(self.failures) != 1 else ''}): {said}")


class NotResumable(Exception):
    """The channel a fail-over would resume is no longer resumable here (settled, out of
    change, too close to its expiry, or in use by another connection of this process)."""

    def __init__(self, contract_txid: bytes) -> None:
        super().__init__(f"channel {display_hex(contract_txid)} can no longer be resumed")
        self.contract_txid = contract_txid


class ResumeRefused(Exception):
    """The server does not know the channel (it offered a new one): not on the same database."""

    def __init__(self, contract_txid: bytes) -> None:
        super().__init__(f"the server does not know channel {display_hex(contract_txid)} (is it on the same database?)")
        self.contract_txid = contract_txid


@implementer(IStreamClientEndpoint)
class NamedEndpoint:
    """An endpoint with the name a person gave it (``tcp:10.0.0.5:4242``), for what is said."""

    def __init__(self, endpoint: IStreamClientEndpoint, name: str) -> None:
        self.endpoint = endpoint
        self.name = name

    def connect(self, protocolFactory: Any) -> "defer.Deferred[Any]":
        d: defer.Deferred[Any] = self.endpoint.connect(protocolFactory)
        return d

    def __str__(self) -> str:
        return self.name


def endpoint_name(endpoint: IStreamClientEndpoint) -> str:
    return endpoint.name if isinstance(endpoint, NamedEndpoint) else repr(endpoint)


class FundsNothing:
    """The client's wallet, except that it funds no contract: a connection made to resume or
    settle a stored channel, should the server offer a new one instead, fails with ``why``."""

    def __init__(self, wallet: IWallet, why: str) -> None:
        self._wallet = wallet
        self._why = why

    def fund(self, script_pubkey: bytes, amount: int, fee_rate: int) -> "defer.Deferred[Any]":
        return defer.fail(RuntimeError(self._why))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wallet, name)


def resume_only(channel: ClientChannel) -> None:
    """Make ``channel`` (a resume) end rather than fund a new channel if the server refuses it."""
    channel.wallet = cast(IWallet, FundsNothing(channel.wallet, _NO_NEW_CHANNEL))


def check_resume_refused(channel: ClientChannel, contract_txid: bytes) -> None:
    """After a resume of ``contract_txid`` closed: :class:`ResumeRefused` if the server
    answered it with an offer of a new channel (the machine dropped its resume)."""
    if channel.machine.resume is None and channel.machine.major is not None:
        raise ResumeRefused(contract_txid)


def _why(error: BaseException, endpoint: IStreamClientEndpoint) -> str:
    inner = endpoint.endpoint if isinstance(endpoint, NamedEndpoint) else endpoint
    tls_error = getattr(inner, "tls_error", None)
    if tls_error is not None:
        return f"its TLS certificate cannot be verified ({tls_error})"
    return str(error) or type(error).__name__


def _may_try_next_opening(error: BaseException) -> bool:
    """A first opening goes to the next endpoint only when nothing can have been funded: the
    endpoint could not be reached or closed before answering CLIENT_VERSION."""
    from twisted_paychan.net.client import ServerDidNotAnswer

    return isinstance(error, TRANSPORT_ERRORS + (ServerDidNotAnswer,))


def _may_try_next_resume(error: BaseException) -> bool:
    """A fail-over resume funds nothing (:func:`resume_only`), so any closed connection or
    refusal sends it to the next endpoint; a channel gone (:class:`NotResumable`) does not."""
    return isinstance(error, TRANSPORT_ERRORS + (ChannelClosed, ResumeRefused))


@dataclass(frozen=True)
class Resumed:
    """Told to :attr:`FailoverConnection.on_resumed` listeners after each fail-over."""

    previous: str
    endpoint: str
    contract_txid: bytes


class FailoverConnection:
    """An open channel that outlives its connection: ``pay``, ``settle`` and ``disconnect`` as
    on a :class:`~twisted_paychan.net.client.ClientConnection`, resuming on the next endpoint
    after a drop. ``channel``, ``protocol`` and ``record`` are those of the current connection."""

    def __init__(self, reactor: Any, endpoints: Sequence[IStreamClientEndpoint], wallet: IWallet,
                 store: IChannelStore, manager: ClientChannelManager, settings: ClientSettings, server_id: bytes,
                 signer: Optional[ISigner], protocol_class: type, backoff: Backoff = Backoff()) -> None:
        if not endpoints:
            raise ValueError("connect needs at least one endpoint")
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self.endpoints = list(endpoints)
        self._wallet = wallet
        self._store = store
        self._manager = manager
        self._settings = settings
        self._server_id = server_id
        self._signer = signer
        self._protocol_class = protocol_class
        self.backoff = backoff
        self._current: Optional["ClientConnection"] = None
        self._index = 0
        #: Resumes since the last acknowledged payment (the budget of :class:`Backoff`).
        self._unproductive = 0
        self._resuming: Optional[defer.Deferred["ClientConnection"]] = None
        self._waiters: list[defer.Deferred["ClientConnection"]] = []
        self._sleep: Optional[defer.Deferred[None]] = None
        self._stopped = False
        self.failovers = 0
        #: Called with a :class:`Resumed` after each fail-over.
        self.on_resumed: list[Callable[[Resumed], None]] = []
        self.contract_txid = b""
        self.resumed = False

    @classmethod
    def open(cls, reactor: Any, endpoints: Sequence[IStreamClientEndpoint], wallet: IWallet, store: IChannelStore,
             manager: ClientChannelManager, settings: ClientSettings, server_id: bytes, signer: Optional[ISigner],
             protocol_class: type, backoff: Backoff = Backoff()) -> defer.Deferred["FailoverConnection"]:
        """What ``connect()`` does with several endpoints: the channel on the first that gives it."""
        self = cls(reactor, endpoints, wallet, store, manager, settings, server_id, signer, protocol_class, backoff)
        return defer.ensureDeferred(self._open())

    async def _open(self) -> "FailoverConnection":
        from twisted_paychan.net.client import open_channel

        def attempt(endpoint: IStreamClientEndpoint) -> Awaitable["ClientConnection"]:
            return open_channel(self._reactor, endpoint, self._wallet, self._store, self._manager, self._settings,
                                self._server_id, self._signer, self._protocol_class)

        connection = await self._round_robin(0, attempt, _may_try_next_opening)
        self._current = connection
        self.contract_txid = connection.contract_txid
        self.resumed = connection.resumed
        return self

    # -- what a ClientConnection offers -------------------------------------------------------

    @property
    def connection(self) -> "ClientConnection":
        assert self._current is not None
        return self._current

    @property
    def channel(self) -> ClientChannel:
        return self.connection.channel

    @property
    def protocol(self) -> "ClientChannelProtocol":
        return self.connection.protocol

    @property
    def record(self) -> Optional[ClientChannelRecord]:
        return self.connection.record

    @property
    def endpoint(self) -> str:
        """The name of the endpoint the current connection goes to."""
        return endpoint_name(self.endpoints[self._index])

    @property
    def dropped(self) -> bool:
        """The current connection dropped: the next ``pay`` or ``settle`` resumes elsewhere."""
        return self.channel.close_reason is CloseReason.CONNECTION_CLOSED and not self._stopped

    def pay(self, amount: int, info: Optional[bytes] = None) -> defer.Deferred[PaymentAck]:
        if not self.dropped and self._resuming is None:
            return self.connection.pay(amount, info).addCallback(self._acked)
        return self._after_resume().addCallback(lambda c: c.pay(amount, info)).addCallback(self._acked)

    def settle(self) -> defer.Deferred[Settlement]:
        if not self.dropped and self._resuming is None:
            return self.connection.settle()
        return self._after_resume().addCallback(lambda c: c.settle())

    def disconnect(self) -> None:
        """Close without settling (the channel stays stored) and resume nowhere."""
        self.stop()
        self.connection.disconnect()

    def stop(self) -> None:
        """Resume no more: a fail-over waiting between rounds fails at once (Ctrl-C)."""
        self._stopped = True
        if self._sleep is not None:
            self._sleep.cancel()

    # -- fail-over ----------------------------------------------------------------------------

    def _acked(self, ack: PaymentAck) -> PaymentAck:
        self._unproductive = 0
        return ack

    def _after_resume(self) -> defer.Deferred["ClientConnection"]:
        """Each caller its own Deferred, fired in the order asked once the resume is done, so
        that payments asked for during it leave in that order."""
        waiter: defer.Deferred["ClientConnection"] = defer.Deferred()
        self._waiters.append(waiter)
        if self._resuming is None:
            self._resuming = defer.ensureDeferred(self._resume())
            self._resuming.addBoth(self._resume_done)
        return waiter

    def _resume_done(self, outcome: "ClientConnection | Failure") -> None:
        self._resuming = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    async def _resume(self) -> "ClientConnection":
        from twisted_paychan.net.client import open_channel

        if self._stopped:
            raise ChannelClosed(CloseReason.CONNECTION_CLOSED, "stopped: no fail-over")
        previous = self.connection
        # Once the connection is over, every c it stored is durable and the channel is free
        # for another connection of this process: only then is it read back for the resume.
        await previous.channel.closed
        record = previous.record
        assert record is not None
        txid = record.contract_txid
        self._unproductive += 1
        if self._unproductive > self.backoff.rounds:
            raise AllEndpointsFailed([(self.endpoint, "dropped the connection before acknowledging a payment, "
                                                      f"{self._unproductive - 1} resumes in a row")],
                                     self.backoff.rounds)
        if self._unproductive > 1:
            await self._wait(self.backoff.wait(self._unproductive - 1))
        before = self.endpoint
        versions = VersionSelector.VERSION_2 if record.version == 2 else VersionSelector.VERSION_1
        settings = replace(self._settings, versions=versions)
        log.info("channel {txid}: the connection to {endpoint} dropped; resuming on the next server",
                 txid=display_hex(txid), endpoint=before)

        def attempt(endpoint: IStreamClientEndpoint) -> Awaitable["ClientConnection"]:
            return open_channel(self._reactor, endpoint, self._wallet, self._store, self._manager, settings,
                                self._server_id, None, self._protocol_class, only=txid)

        connection = await self._round_robin(self._index + 1, attempt, _may_try_next_resume)
        self._current = connection
        self.failovers += 1
        log.info("channel {txid}: resumed on {endpoint}", txid=display_hex(txid), endpoint=self.endpoint)
        told = Resumed(before, self.endpoint, txid)
        for listener in list(self.on_resumed):
            listener(told)
        return connection

    async def _round_robin(self, start: int, attempt: Callable[[IStreamClientEndpoint], Awaitable["ClientConnection"]],
                           may_try_next: Callable[[BaseException], bool]) -> "ClientConnection":
        failures: dict[str, str] = {}
        count = len(self.endpoints)
        for round_ in range(self.backoff.rounds):
            if round_:
                await self._wait(self.backoff.wait(round_))
            for k in range(count):
                index = (start + k) % count
                endpoint = self.endpoints[index]
                try:
                    connection = await attempt(endpoint)
                except Exception as e:
                    if not may_try_next(e):
                        raise
                    failures[endpoint_name(endpoint)] = _why(e, endpoint)
                    log.info("{endpoint}: {why}", endpoint=endpoint_name(endpoint), why=_why(e, endpoint))
                    continue
                self._index = index
                return connection
        raise AllEndpointsFailed(list(failures.items()), self.backoff.rounds)

    async def _wait(self, seconds: float) -> None:
        if self._stopped:
            raise ChannelClosed(CloseReason.CONNECTION_CLOSED, "stopped: no fail-over")
        self._sleep = task.deferLater(self._clock, seconds, lambda: None)
        try:
            await self._sleep
        except defer.CancelledError:
            raise ChannelClosed(CloseReason.CONNECTION_CLOSED, "stopped: no fail-over") from None
        finally:
            self._sleep = None
