"""
A client channel for any transport: the Deferred-returning API over the sans-IO
:class:`ClientMachine`, carrying out its effects through the wallet, chain and store.

``opened`` fires once CHANNEL_OPEN arrives (new or resumed channel); ``pay`` returns a Deferred
of a :class:`PaymentAck`; ``settle`` returns a Deferred of the settlement transaction, which
comes either in the server's CLOSE or, from a stock bitcoinj server that only closes the socket
(§1.4), from the chain (:class:`SettledOnChain`, delivered by the channel's owner through
``settled_on_chain``). Every pending Deferred fails with :class:`ChannelClosed` and the close
reason on ERROR, EOF and disconnect, and when the server's answer does not come within
``ClientSettings.reply_timeout`` seconds (the connection is then closed; the channel stays
stored and resumable). One exception (§7.3 step 4): the payment that leaves no change fires as
paid when the connection ends without its PAYMENT_ACK (EOF, or the server's CLOSE first); the
close reason is then ``CHANNEL_EXHAUSTED`` (as after PAYMENT_ACK and CLOSE), and ``settle()``
fires with the server's settlement, from its CLOSE or from the chain.

This object writes only what the connection machine asks for (the new channel, c before each
payment). What happens to the stored channel afterwards (a settlement, a refund) belongs to its
lifecycle machine, owned by ``ClientChannelManager``: the two :class:`ConnectionHooks` tell it
that a channel was stored and that the server's CLOSE carried a settlement.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import assert_never

from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.effects import ClientEffect
from twisted_paychan.faults import crash_point
from twisted_paychan.net.effect_runner import EffectRunner, Outcome
from twisted_paychan.channel.client import ClientMachine
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.settings import ClientSettings
from twisted_paychan.chain.types import display_hex
from twisted_paychan.net.logfields import NO_PEER
from twisted_paychan.channel.records import ClientChannelRecord
from twisted_paychan.chain.interfaces import ISigner, IWallet
from twisted_paychan.store.interfaces import IChannelStore
from twisted_paychan.wire import received
from twisted_paychan.wire.messages import TwoWayChannelMessage


@dataclass(frozen=True)
class PaymentAck:
    #: What was actually paid (more than asked when the change would have been dust).
    amount: int
    info: Optional[bytes]


@dataclass(frozen=True)
class ChannelOpen:
    contract_txid: bytes
    resumed: bool


@dataclass(frozen=True)
class SettledOnChain:
    """The server closed without sending its CLOSE; the settlement was found on the chain."""

    tx: bytes


#: What ``settle()`` fires with: the settlement from the server's CLOSE, or found on the chain.
Settlement = Union[bytes, SettledOnChain]


def _no_settlement_store(record: ClientChannelRecord, tx: bytes) -> defer.Deferred[None]:
    return defer.succeed(None)


@dataclass(frozen=True)
class ConnectionHooks:
    """How a connection tells its channel's owner what happened to the stored channel. Called,
    never written into: the owner decides what to store."""

    #: The new channel is stored (its refund too): the owner starts following it.
    channel_stored: Callable[[ClientChannelRecord], None] = lambda record: None
    #: The server's CLOSE carried this settlement; the connection closes once the Deferred
    #: fires (the owner has stored it).
    settlement_received: Callable[[ClientChannelRecord, bytes], defer.Deferred[None]] = _no_settlement_store


class ClientChannel(EffectRunner[ClientEffect]):
    """One connection to a server, client side, over any transport."""

    log = Logger()

    def __init__(
        self,
        wallet: IWallet,
        store: IChannelStore,
        settings: ClientSettings,
        server_id: bytes,
        signer: ISigner,
        send: Callable[[TwoWayChannelMessage], None],
        close: Callable[[CloseReason], None],
        clock: IReactorTime,
        resume: Optional[ClientChannelRecord] = None,
        *,
        hooks: ConnectionHooks = ConnectionHooks(),
    ) -> None:
        super().__init__()
        self.wallet = wallet
        self.store = store
        self.hooks = hooks
        self.settings = settings
        self.machine = ClientMachine(settings, server_id, signer, resume)
        self._send = send
        self._close = close
        self.clock = clock
        self.close_reason: Optional[CloseReason] = None
        #: The server's address, for log lines (set by the transport's adapter).
        self.peer = NO_PEER
        #: What ended the connection, for a ``settle()`` asked for after that.
        self._close_detail = ""
        self.opened: defer.Deferred[ChannelOpen] = defer.Deferred()
        #: Fires with the close reason when the connection is over.
        self.closed: defer.Deferred[CloseReason] = defer.Deferred()
        #: One Deferred per payment not yet acknowledged, oldest first (``max_in_flight``).
        self._payments: deque[defer.Deferred[PaymentAck]] = deque()
        self._settlement: Optional[defer.Deferred[Settlement]] = None
        self._settlement_tx: Optional[bytes] = None
        #: A settlement the owner found on the chain (``settled_on_chain``).
        self._chain_settlement: Optional[bytes] = None
        self._settle_waiters: list[defer.Deferred[Settlement]] = []
        self._settle_outcome: Union[None, Settlement, Failure] = None
        #: The answer we wait for (PAYMENT_ACK, or CLOSE after ours), by when (reply_timeout),
        #: and the one timer that checks it.
        self._awaited: Optional[str] = None
        self._reply_deadline = 0.0
        self._reply_timer: Optional[IDelayedCall] = None

    @property
    def record(self) -> Optional[ClientChannelRecord]:
        return self.machine.record

    # -- the API ------------------------------------------------------------------------------

    def start(self) -> None:
        self._run(self.machine.start())

    def pay(self, amount: int, info: Optional[bytes] = None) -> defer.Deferred[PaymentAck]:
        """Pay ``amount`` more; raises ChannelUsageError at once if that cannot be done. With
        ``max_in_flight`` > 1, up to that many may be outstanding: each fires with its own
        PAYMENT_ACK, in the order asked."""
        effects = self.machine.pay(amount, info, int(self.clock.seconds()))
        d: defer.Deferred[PaymentAck] = defer.Deferred()
        self._payments.append(d)
        self._wait_for_reply("PAYMENT_ACK")
        self._run(effects)
        return d

    def settle(self) -> defer.Deferred[Settlement]:
        """Ask the server to settle; fires with the settlement tx bytes or SettledOnChain."""
        d: defer.Deferred[Settlement] = defer.Deferred()
        first = self._settlement is None
        if first:
            self._settlement = defer.Deferred()
            self._settlement.addBoth(self._settled)
        self._settle_waiters.append(d)
        if self._settle_outcome is not None:
            self._settled(self._settle_outcome)
        elif first:
            if self.close_reason is None:
                self._wait_for_reply("CLOSE")
                self._run(self.machine.settle())
            else:
                # Closed already: after exhaustion the server settled by itself (§7.3 step 4).
                self._close_settlement(self.close_reason, self._close_detail)
        return d

    @property
    def exhausted(self) -> bool:
        """The connection ended on the payment that left no change: that payment counts as
        paid, and the server settles by itself (§7.3 step 4); ``settle()`` then fires with its
        settlement, from its CLOSE or, when stock bitcoinj lost the CLOSE (§1.4), from the chain."""
        return self.close_reason is CloseReason.CHANNEL_EXHAUSTED

    def _settles_by_itself(self) -> bool:
        """The server settles without a CLOSE reaching us: EOF after our CLOSE, or exhaustion."""
        reason = self.close_reason
        return self.machine.record is not None and (
            reason is CloseReason.CHANNEL_EXHAUSTED
            or (reason is CloseReason.CLIENT_REQUESTED_CLOSE and self._settlement is not None))

    @property
    def awaiting_settlement_from_chain(self) -> bool:
        """The connection ended without the server's settlement where one is due (EOF after our
        CLOSE, or after the exhausting payment): the owner watches the chain for it."""
        settlement = self._settlement
        return (self._settles_by_itself() and (settlement is None or not settlement.called)
                and self._settlement_tx is None and self._chain_settlement is None)

    def settled_on_chain(self, tx: bytes) -> None:
        """Completion from the channel's owner: the contract output was spent by ``tx``, not
        our refund, and the stored channel says so. A ``settle()`` that ended in EOF (a stock
        bitcoinj server, §1.4) fires with it."""
        self._chain_settlement = tx
        settlement = self._settlement
        if settlement is not None and not settlement.called and self._settles_by_itself():
            settlement.callback(SettledOnChain(tx))

    # -- reply_timeout ------------------------------------------------------------------------

    # Once per payment: a deadline moved, not a timer armed and cancelled. One timer stays armed
    # while replies are awaited; when it fires early (a later request moved the deadline) it is
    # armed again for the rest, so the hot path never touches the reactor's timer queue.

    def _wait_for_reply(self, what: str) -> None:
        timeout = self.settings.reply_timeout
        if timeout is None:
            return
        self._awaited = what
        self._reply_deadline = self.clock.seconds() + timeout
        if self._reply_timer is None:
            self._reply_timer = self.clock.callLater(timeout, self._reply_check)

    def _reply_came(self) -> None:
        self._awaited = None

    def _stop_reply_timer(self) -> None:
        self._awaited = None
        timer, self._reply_timer = self._reply_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _reply_check(self) -> None:
        self._reply_timer = None
        what = self._awaited
        if what is None or self.close_reason is not None:
            return
        left = self._reply_deadline - self.clock.seconds()
        if left > 0:
            self._reply_timer = self.clock.callLater(left, self._reply_check)
            return
        self._reply_timed_out(what, self.settings.reply_timeout or 0.0)

    def _reply_timed_out(self, what: str, timeout: float) -> None:
        """The server did not answer in time: fail what waits, with the reason, and close. The
        channel stays stored; a later connection resumes it."""
        self.log.warn("channel {txid} (peer {peer}): no {what} within {timeout} s (reply_timeout); closing",
                      txid=display_hex(self.record.contract_txid) if self.record is not None else "-",
                      peer=self.peer, what=what, timeout=timeout)
        self._finish(CloseReason.CONNECTION_CLOSED, f"no {what} from the server within {timeout:g} s (reply_timeout)")
        self._run(self.machine.disconnect())

    def _settled(self, outcome: Any) -> None:
        """Hand the settlement outcome to everyone who asked for it (each their own Deferred)."""
        self._settle_outcome = outcome
        waiters, self._settle_waiters = self._settle_waiters, []
        for d in waiters:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def disconnect(self) -> None:
        """Close without settling; the channel stays stored and resumable."""
        self._run(self.machine.disconnect())

    # -- input --------------------------------------------------------------------------------

    def message_received(self, message: TwoWayChannelMessage) -> None:
        self._run(self.machine.receive(received.decode(message), int(self.clock.seconds())))

    def connection_lost(self) -> None:
        self._run(self.machine.connection_lost())

    # -- effects ------------------------------------------------------------------------------

    def _effect_failed(self, failure: Failure) -> None:
        self._finish(CloseReason.CONNECTION_CLOSED, failure.getErrorMessage())

    def _do_send(self, effect: fx.Send) -> Outcome[ClientEffect]:
        if self.close_reason is None:
            self._send(effect.message)
        return None

    def _do_close(self, effect: fx.Close) -> Outcome[ClientEffect]:
        self._finish(effect.reason, effect.detail)
        return None

    def _fund_contract(self, effect: fx.FundContract) -> Outcome[ClientEffect]:
        m = self.machine
        d = defer.maybeDeferred(self.wallet.fund, effect.script_pubkey, effect.value, self.settings.fee_rate)

        def funded(tx: Any) -> list[Any]:
            crash_point("client-contract-funded")
            return m.contract_funded(tx, int(self.clock.seconds()))

        return d.addCallbacks(funded, lambda f: m.funding_failed(f.getErrorMessage()))

    def _store_channel(self, effect: fx.StoreClientChannel) -> Outcome[ClientEffect]:
        m = self.machine

        def stored(_: Any) -> list[Any]:
            crash_point("client-channel-stored")
            self.hooks.channel_stored(effect.record)
            return m.channel_stored()

        d: defer.Deferred[None] = self.store.add_client_channel(effect.record)
        return d.addCallback(stored)

    # Once per payment: a bound method as the store's callback, no closure made each time.

    def _store_change(self, effect: fx.StoreClientChange) -> Outcome[ClientEffect]:
        d: defer.Deferred[None] = self.store.record_client_change(effect.contract_txid, effect.client_change)
        return self._alongside(d.addCallback(self._change_stored))

    def _change_stored(self, _: Any) -> list[Any]:
        crash_point("client-change-stored")
        return self.machine.change_stored()

    def _release_contract(self, effect: fx.ReleaseContract) -> Outcome[ClientEffect]:
        self.wallet.release(effect.funded)
        return None

    def _resume_refused(self, effect: fx.ResumeRefused) -> Outcome[ClientEffect]:
        self.log.info("channel {txid} (peer {peer}): the server refused to resume it; opening a new one",
                      txid=display_hex(effect.contract_txid), peer=self.peer)
        return None

    def _channel_opened(self, effect: fx.ChannelOpened) -> Outcome[ClientEffect]:
        self.log.info("channel {txid} (peer {peer}): open ({how})", txid=display_hex(effect.contract_txid),
                      peer=self.peer, how="resumed" if effect.resumed else "new")
        self.opened.callback(ChannelOpen(effect.contract_txid, effect.resumed))
        return None

    def _payment_acked(self, effect: fx.PaymentAcked) -> Outcome[ClientEffect]:
        payments = self._payments
        if payments:
            waiting = payments.popleft()
            if payments:
                self._wait_for_reply("PAYMENT_ACK")  # the next one's ack, within reply_timeout
            else:
                self._reply_came()
            waiting.callback(PaymentAck(effect.amount, effect.info))
        else:
            self._reply_came()
        return None

    def _settlement_seen(self, effect: fx.SettlementSeen) -> Outcome[ClientEffect]:
        """The owner stores it (by its lifecycle machine) before the connection closes."""
        self._settlement_tx = effect.tx
        record = self.machine.record
        assert record is not None
        return self.hooks.settlement_received(record, effect.tx).addCallback(lambda _: [])

    def _perform(self, effect: ClientEffect) -> Outcome[ClientEffect]:
        """Each effect to its method: the ones of every payment first (store c, send, ack), and
        ``assert_never`` last, so an effect added to ``ClientEffect`` without a method here
        fails the type check."""
        if isinstance(effect, fx.StoreClientChange):
            return self._store_change(effect)
        if isinstance(effect, fx.Send):
            return self._do_send(effect)
        if isinstance(effect, fx.PaymentAcked):
            return self._payment_acked(effect)
        if isinstance(effect, fx.Close):
            return self._do_close(effect)
        if isinstance(effect, fx.FundContract):
            return self._fund_contract(effect)
        if isinstance(effect, fx.StoreClientChannel):
            return self._store_channel(effect)
        if isinstance(effect, fx.ReleaseContract):
            return self._release_contract(effect)
        if isinstance(effect, fx.ResumeRefused):
            return self._resume_refused(effect)
        if isinstance(effect, fx.ChannelOpened):
            return self._channel_opened(effect)
        if isinstance(effect, fx.SettlementSeen):
            return self._settlement_seen(effect)
        assert_never(effect)

    def _finish(self, reason: CloseReason, detail: str = "") -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._stop_reply_timer()
        self._close(reason)
        self.closed.callback(reason)
        error = ChannelClosed(reason, detail)
        if not self.opened.called:
            self.opened.errback(error)
        payments, self._payments = self._payments, deque()
        for payment in payments:
            payment.errback(error)
        self._close_detail = detail
        self._close_settlement(reason, detail)

    def _close_settlement(self, reason: CloseReason, detail: str) -> None:
        """What the connection's end means for ``settle()``."""
        settlement = self._settlement
        if settlement is None or settlement.called:
            return
        if self._settlement_tx is not None:
            settlement.callback(self._settlement_tx)
        elif self._settles_by_itself():
            # A stock bitcoinj server closes without its CLOSE (§1.4): the owner's lifecycle
            # machine watches the contract output and answers with ``settled_on_chain``.
            if self._chain_settlement is not None:
                settlement.callback(SettledOnChain(self._chain_settlement))
        else:
            settlement.errback(ChannelClosed(reason, detail))
