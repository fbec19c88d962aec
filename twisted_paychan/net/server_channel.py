"""
A server channel for any transport: feed it ``TwoWayChannelMessage``s, give it a ``send``
and a ``close`` callable, and it runs the sans-IO :class:`ServerMachine`, carrying out each
effect through the wallet, chain, store and application handler.

Effects run strictly in order. An effect that takes time (a Deferred) holds back the ones after
it, and its completion is fed back to the machine, whose new effects run next; a payment's store
write alone runs alongside (``EffectRunner._alongside``), so that pipelined payments share a sync.
Nothing is ever re-entered: messages that arrive meanwhile wait in the machine's queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import assert_never
from zope.interface import Interface, implementer

from twisted_paychan.bitcoin.settlement import SettlementRejected, SettlementUnaffordable
from twisted_paychan.channel import effects as fx
from twisted_paychan.net.effect_runner import EffectRunner, Outcome
from twisted_paychan.net.logfields import NO_PEER
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.server import ServerMachine, ServerStep
from twisted_paychan.channel.settings import ServerSettings
from twisted_paychan.chain.types import RejectKind, display_hex, refusal
from twisted_paychan import logs
from twisted_paychan.faults import crash_point
from twisted_paychan.chain.interfaces import IPreparedSigner, ISigner
from twisted_paychan.channel.effects import ServerEffect
from twisted_paychan.channel.records import ServerChannelRecord
from twisted_paychan.store.interfaces import ChannelNotOpen, StoreError
from twisted_paychan.net.observers import ServerObserver
from twisted_paychan.wire import received
from twisted_paychan.wire.messages import TwoWayChannelMessage


#: The connection machine's effects (``channel.effects``), in order.
Effects = list[ServerEffect]


class IServerHandler(Interface):
    """What the application hears about a channel connection (spec §12.3), in this order:
    ``channel_opened`` once, before any payment; ``payment_received`` once for every stored
    increase of b (the initial payment first); ``channel_closed`` last, after every payment
    the connection stored, even one stored after the transport was lost. A connection that
    never stored or resumed a channel hears only ``channel_closed``."""

    def channel_opened(contract_txid: bytes) -> None:
        """The channel is open on this connection (new or resumed): stored, contract accepted."""

    def payment_received(contract_txid: bytes, increase: int, total: int,
                         info: Optional[bytes]) -> "Union[None, bytes, defer.Deferred[Optional[bytes]]]":
        """The server's value grew by ``increase`` to ``total`` (stored already, so it will be
        settled whatever is answered). Return None, bytes for the PAYMENT_ACK info, or a
        Deferred of either; a failed Deferred (or an exception) refuses the payment: no
        PAYMENT_ACK, ERROR{OTHER} and UPDATE_PAYMENT_FAILED. The answer is ignored for the
        initial payment and for a payment stored after the connection ended (no ack to send)."""

    def channel_closed(reason: CloseReason) -> None:
        """The connection ended, with the real reason; the last call."""


@implementer(IServerHandler)
class NullServerHandler:
    """A handler that accepts everything and says nothing."""

    def channel_opened(self, contract_txid: bytes) -> None:
        pass

    def payment_received(self, contract_txid: bytes, increase: int, total: int, info: Optional[bytes]) -> None:
        return None

    def channel_closed(self, reason: CloseReason) -> None:
        pass


@dataclass(frozen=True)
class ConnectionPorts:
    """What a connection may ask of the channels' owner (``ServerChannelManager``): narrow
    typed calls, one per effect that needs a backend. The owner tells a connection things only
    through the connection's machine (``close``, ``settled_elsewhere``)."""

    #: A fresh channel key for this connection (``NewServerKey``), provisional until stored.
    new_channel_key: Callable[["ServerChannel"], "defer.Deferred[ISigner]"]
    #: The stored OPEN channel this connection resumes, read after every payment a previous
    #: connection had in flight is stored; or None (``FindChannel``). Attached to it at once
    #: unless a live connection holds it; then its first stored payment must prove the client
    #: key (``ServerChannelManager``).
    find_channel: Callable[[bytes, "ServerChannel"], "defer.Deferred[Optional[ServerChannelRecord]]"]
    #: Store a new channel durably and attach it to the connection (``StoreServerChannel``).
    store_channel: Callable[[ServerChannelRecord, "ServerChannel"], "defer.Deferred[None]"]
    #: Broadcast the contract (``BroadcastContract``); a refusal is recorded by the owner first.
    broadcast_contract: Callable[[bytes, bytes], "defer.Deferred[None]"]
    #: Durably record a payment of the connection's channel (``StorePayment``).
    store_payment: Callable[["ServerChannel", bytes, int, bytes], "defer.Deferred[None]"]
    #: Settle the connection's channel (``SettleChannel``) -> the settlement; refused
    #: (``SettlementRejected``) to a resume on probation while another connection holds it.
    settle: Callable[["ServerChannel", bytes, CloseReason], "defer.Deferred[bytes]"]
    #: The channel opened on the connection (resumed or new), a payment was acknowledged,
    #: the connection ended: for the owner's subscribers.
    opened: Callable[["ServerChannel", bytes, bool], None]
    paid: Callable[[bytes, int, int], None]
    closed: Callable[["ServerChannel", CloseReason], None]


class ServerChannel(EffectRunner[ServerEffect]):
    """One client connection, server side, over any transport."""

    log = Logger()

    def __init__(
        self,
        ports: ConnectionPorts,
        settings: ServerSettings,
        handler: IServerHandler,
        send: Callable[[TwoWayChannelMessage], None],
        close: Callable[[CloseReason], None],
        clock: IReactorTime,
    ) -> None:
        super().__init__()
        self._ports = ports
        # Once per payment: looked up once here.
        self._record_payment = ports.store_payment
        self._paid = ports.paid
        self.machine = ServerMachine(settings)
        self.handler = handler
        self._send = send
        self._close = close
        self.clock = clock
        self.close_reason: Optional[CloseReason] = None
        self.contract_txid: Optional[bytes] = None
        #: Called when the channel opens (the TCP adapter swaps its handshake timeout).
        self.on_open: Optional[Callable[[], None]] = None
        #: Fires with the close reason once the connection is over and every effect has run.
        self.done: defer.Deferred[CloseReason] = defer.Deferred()
        #: The operator's instruments (``net.observers``), set by the manager; None: unwatched.
        self.observer: Optional[ServerObserver] = None
        #: The client's address ("host:port") while connected over a socket, for the operator.
        self.peer: Optional[str] = None
        #: What arrived while a remote signer signs a v1 refund (``_prepare_refund``), in order;
        #: None when nothing waits.
        self._held: Optional[list[Union[received.ReceivedMessage, None]]] = None

    # -- input --------------------------------------------------------------------------------

    def message_received(self, message: TwoWayChannelMessage) -> None:
        decoded = received.decode(message)
        if self.observer is not None:
            if type(decoded) is received.UpdatePayment:
                self.observer.update_received(self)
            elif type(decoded) is received.Error:
                self.observer.error_received(self, decoded.code)
        if self._held is not None:
            self._held.append(decoded)
            return
        if type(decoded) is received.ProvideRefund and self._refund_needs_fetching():
            self._prepare_refund(decoded)
            return
        self._run(self.machine.receive(decoded, int(self.clock.seconds())))

    def connection_lost(self) -> None:
        if self._held is not None:
            self._held.append(None)  # after what arrived before it
            return
        self._run(self.machine.connection_lost())

    def _refund_needs_fetching(self) -> bool:
        return (self.machine.step is ServerStep.WAITING_ON_UNSIGNED_REFUND
                and IPreparedSigner.providedBy(self.machine.signer))

    def _prepare_refund(self, refund: received.ProvideRefund) -> None:
        """A v1 refund for a key in another process: fetch its signature first, holding back
        what arrives meanwhile, then let the machine (which signs synchronously) handle it all."""
        signer = IPreparedSigner(self.machine.signer)
        assert self.machine.expiry is not None
        self._held = []

        def fetched(_: object) -> None:
            held, self._held = self._held or [], None
            self._run(self.machine.receive(refund, int(self.clock.seconds())))
            for message in held:
                if message is None:
                    self._run(self.machine.connection_lost())
                else:
                    self._run(self.machine.receive(message, int(self.clock.seconds())))

        d: defer.Deferred[None] = signer.prepare_refund(refund.multisig_key, self.machine.expiry, refund.tx)
        d.addCallback(fetched).addErrback(self._internal_error)

    def close(self) -> None:
        """End this connection without settling (plain CLOSE)."""
        self._run(self.machine.close())

    def settled_elsewhere(self, settlement_tx: bytes) -> None:
        """The channel was settled outside this connection (operator): tell the client."""
        self._run(self.machine.settled_elsewhere(settlement_tx))

    # -- carrying out effects -----------------------------------------------------------------

    def _effect_failed(self, failure: Failure) -> None:
        self._finish(CloseReason.CONNECTION_CLOSED)

    def _do_send(self, effect: fx.Send) -> Outcome[ServerEffect]:
        if self.close_reason is None:
            self._send(effect.message)
            if self.observer is not None:
                self.observer.sent(self, effect.message)
        return None

    def _do_close(self, effect: fx.Close) -> Outcome[ServerEffect]:
        self._finish(effect.reason, effect.detail)
        return None

    def _new_server_key(self, effect: fx.NewServerKey) -> Outcome[ServerEffect]:
        return self._ports.new_channel_key(self).addCallbacks(self.machine.server_key_ready, self._no_server_key)

    def _no_server_key(self, f: Failure) -> Effects:
        self.log.warn("peer {peer}: no channel key for a new channel: {why}", peer=self.peer or NO_PEER,
                      why=f.getErrorMessage())
        return self.machine.server_key_unavailable(f.getErrorMessage())

    def _find_channel(self, effect: fx.FindChannel) -> Outcome[ServerEffect]:
        m = self.machine
        d = self._ports.find_channel(effect.contract_txid, self)
        return d.addCallback(lambda rec: m.resume_found(rec) if rec is not None else m.resume_not_found())

    def _broadcast_contract(self, effect: fx.BroadcastContract) -> Outcome[ServerEffect]:
        m = self.machine
        d = self._ports.broadcast_contract(effect.tx, effect.contract_txid)

        def accepted(_: Any) -> Effects:
            crash_point("contract-broadcast")
            return m.contract_accepted(int(self.clock.seconds()))

        def rejected(f: Failure) -> Effects:
            kind, why = refusal(f.value)
            return m.contract_rejected(why, unreachable=kind is RejectKind.UNREACHABLE)

        return d.addCallbacks(accepted, rejected)

    def _store_channel(self, effect: fx.StoreServerChannel) -> Outcome[ServerEffect]:
        m = self.machine
        d = self._ports.store_channel(effect.record, self)

        def stored(_: Any) -> Effects:
            crash_point("channel-stored")
            return m.channel_stored()

        return d.addCallback(stored)

    # Once per payment: bound methods as the store's callbacks, no closures made each time.

    def _store_payment(self, effect: fx.StorePayment) -> Outcome[ServerEffect]:
        d = self._record_payment(self, effect.contract_txid, effect.best_value, effect.signature)
        return self._alongside(d.addCallbacks(self._payment_stored, self._payment_refused))

    def _payment_stored(self, _: Any) -> Effects:
        crash_point("payment-stored")
        return self.machine.payment_stored()

    def _payment_refused(self, f: Failure) -> Effects:
        # Not open any more, or a b lower than the stored one: refused, never acknowledged.
        if not isinstance(f.value, StoreError):
            f.raiseException()  # not a refusal: the runner closes down
        if not isinstance(f.value, ChannelNotOpen):
            self.log.warn("channel {txid} (peer {peer}): payment refused by the store: {why}",
                          txid=_DisplayTxid(self.contract_txid or b""), peer=self.peer or NO_PEER, why=f.getErrorMessage())
        return self.machine.payment_refused(f.getErrorMessage())

    def _notify_payment(self, effect: fx.NotifyPayment) -> Outcome[ServerEffect]:
        if logs.verbose:  # once per payment: only when asked for (see ``logs``)
            self.log.debug("channel {txid} (peer {peer}): payment +{increase} sat, total {total}",
                           txid=_DisplayTxid(effect.contract_txid), peer=self.peer or NO_PEER, increase=effect.increase,
                           total=effect.total)
        self._paid(effect.contract_txid, effect.increase, effect.total)
        m = self.machine
        if not effect.awaited:
            d = defer.maybeDeferred(
                self.handler.payment_received, effect.contract_txid, effect.increase, effect.total, effect.info
            )
            d.addErrback(self._unawaited_refusal, effect.contract_txid)
            return None
        # What defer.maybeDeferred would do, without wrapping the usual plain answer (None or
        # info bytes) in a Deferred only to unwrap it again on every payment.
        try:
            info = self.handler.payment_received(effect.contract_txid, effect.increase, effect.total, effect.info)
        except BaseException:  # a refusal, as maybeDeferred makes it
            d = defer.fail()
        else:
            if info is None or type(info) is bytes:
                return self._complete_now(m.payment_acknowledged, info)
            d = defer.maybeDeferred(_as_is, info)  # a Deferred, a coroutine or a Failure
        return d.addCallbacks(m.payment_acknowledged, self._payment_ack_failed)

    def _unawaited_refusal(self, f: Failure, contract_txid: bytes) -> None:
        """A handler's refusal of a payment it cannot refuse (the initial one, or one stored
        after the connection ended: paid and stored either way) is news for the operator, not a
        crash: one line with its reason (a webhook that is down says so on every such payment);
        the traceback only with ``--verbose``."""
        self.log.warn("channel {txid} (peer {peer}): the payment handler refused a payment with no ack to send "
                      "(it stays paid): {why}", txid=_DisplayTxid(contract_txid), peer=self.peer or NO_PEER,
                      why=f.getErrorMessage())
        if logs.verbose:
            self.log.failure("channel {txid}: the payment handler's failure", f, txid=_DisplayTxid(contract_txid))

    def _payment_ack_failed(self, f: Failure) -> Effects:
        return self.machine.payment_ack_failed(f.getErrorMessage())

    def _channel_opened(self, effect: fx.ChannelOpened) -> Outcome[ServerEffect]:
        self.contract_txid = effect.contract_txid
        self.log.info("channel {txid} (peer {peer}): open ({how})", txid=display_hex(effect.contract_txid),
                      peer=self.peer or NO_PEER, how="resumed" if effect.resumed else "new")
        self._ports.opened(self, effect.contract_txid, effect.resumed)
        if self.on_open is not None:
            self.on_open()
        self.handler.channel_opened(effect.contract_txid)
        return None

    def _settle_channel(self, effect: fx.SettleChannel) -> Outcome[ServerEffect]:
        m = self.machine
        d = self._ports.settle(self, effect.contract_txid, effect.reason)

        def failed(f: Failure) -> Effects:
            unaffordable = isinstance(f.value, SettlementUnaffordable)
            if not unaffordable and not isinstance(f.value, SettlementRejected):
                self.log.failure("channel {txid} (peer {peer}): settlement failed", f,
                                 txid=display_hex(effect.contract_txid), peer=self.peer or NO_PEER)
            return m.settle_failed(f.getErrorMessage(), unaffordable)

        return d.addCallbacks(lambda settlement: m.settled(settlement), failed)

    def _perform(self, effect: ServerEffect) -> Outcome[ServerEffect]:
        """Each effect to its method: the ones of every payment first (store, application,
        ack), and ``assert_never`` last, so an effect added to ``ServerEffect`` without a
        method here fails the type check."""
        if isinstance(effect, fx.StorePayment):
            return self._store_payment(effect)
        if isinstance(effect, fx.NotifyPayment):
            return self._notify_payment(effect)
        if isinstance(effect, fx.Send):
            return self._do_send(effect)
        if isinstance(effect, fx.Close):
            return self._do_close(effect)
        if isinstance(effect, fx.NewServerKey):
            return self._new_server_key(effect)
        if isinstance(effect, fx.FindChannel):
            return self._find_channel(effect)
        if isinstance(effect, fx.BroadcastContract):
            return self._broadcast_contract(effect)
        if isinstance(effect, fx.StoreServerChannel):
            return self._store_channel(effect)
        if isinstance(effect, fx.ChannelOpened):
            return self._channel_opened(effect)
        if isinstance(effect, fx.SettleChannel):
            return self._settle_channel(effect)
        assert_never(effect)

    def _finish(self, reason: CloseReason, detail: str = "") -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        # The cause with its code and explanation (an ERROR received or sent): a failed handshake
        # is otherwise a mystery to the operator.
        self.log.info("channel {txid} (peer {peer}): connection closed ({reason}{detail})",
                      txid=display_hex(self.contract_txid) if self.contract_txid else "-", peer=self.peer or NO_PEER,
                      reason=reason.name, detail=f": {detail}" if detail else "")
        self._ports.closed(self, reason)
        if self.observer is not None:
            self.observer.disconnected(self, reason)
        self._close(reason)
        self._after_alongside(lambda: self._tell_closed(reason))

    def _tell_closed(self, reason: CloseReason) -> None:
        """The handler hears ``channel_closed`` last: after every payment stored, including one
        whose store write was still running when the connection ended."""
        try:
            self.handler.channel_closed(reason)
        finally:
            self.done.callback(reason)


def _as_is(value: Any) -> Any:
    return value


class _DisplayTxid:
    """A txid that turns into display hex only when a log event is actually formatted."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __str__(self) -> str:
        return display_hex(self.raw)
