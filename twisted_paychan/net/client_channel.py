"""
A client channel for any transport: the Deferred-returning API over the sans-IO
:class:`ClientMachine`, carrying out its effects through the wallet, chain and store.

``opened`` fires once CHANNEL_OPEN arrives (new or resumed channel); ``pay`` returns a Deferred
of a :class:`PaymentAck`; ``settle`` returns a Deferred of the settlement transaction, which
comes either in the server's CLOSE or, from a stock bitcoinj server that only closes the socket
(§1.4), from the chain (:class:`SettledOnChain`). Every pending Deferred fails with
:class:`ChannelClosed` and the close reason on ERROR, EOF and disconnect.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import assert_never

from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.effects import ClientEffect
from twisted_paychan.faults import crash_point
from twisted_paychan.net.client_channels import settlement_note
from twisted_paychan.net.effect_runner import EffectRunner, Outcome
from twisted_paychan.channel.client import ClientMachine
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.settings import ClientSettings
from twisted_paychan.chain.types import OutPoint, SpendEvent, display_hex
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState
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


class ClientChannel(EffectRunner[ClientEffect]):
    """One connection to a server, client side, over any transport."""

    log = Logger()

    def __init__(
        self,
        wallet: Any,
        chain: Any,
        store: Any,
        settings: ClientSettings,
        server_id: bytes,
        signer: Any,
        send: Callable[[Any], None],
        close: Callable[[CloseReason], None],
        clock: IReactorTime,
        resume: Optional[ClientChannelRecord] = None,
    ) -> None:
        super().__init__()
        self.wallet = wallet
        self.chain = chain
        self.store = store
        self.settings = settings
        self.machine = ClientMachine(settings, server_id, signer, resume)
        self._send = send
        self._close = close
        self.clock = clock
        self.close_reason: Optional[CloseReason] = None
        self.opened: defer.Deferred[ChannelOpen] = defer.Deferred()
        #: Fires with the close reason when the connection is over.
        self.closed: defer.Deferred[CloseReason] = defer.Deferred()
        self._payment: Optional[defer.Deferred[PaymentAck]] = None
        self._settlement: Optional[defer.Deferred[Any]] = None
        self._settlement_tx: Optional[bytes] = None
        self._settle_waiters: list[defer.Deferred[Any]] = []
        self._settle_outcome: Any = None

    @property
    def record(self) -> Optional[ClientChannelRecord]:
        return self.machine.record

    # -- the API ------------------------------------------------------------------------------

    def start(self) -> None:
        self._run(self.machine.start())

    def pay(self, amount: int, info: Optional[bytes] = None) -> defer.Deferred[PaymentAck]:
        """Pay ``amount`` more; raises ChannelUsageError at once if that cannot be done."""
        effects = self.machine.pay(amount, info, int(self.clock.seconds()))
        d: defer.Deferred[PaymentAck] = defer.Deferred()
        self._payment = d
        self._run(effects)
        return d

    def settle(self) -> defer.Deferred[Any]:
        """Ask the server to settle; fires with the settlement tx bytes or SettledOnChain."""
        d: defer.Deferred[Any] = defer.Deferred()
        first = self._settlement is None
        if first:
            self._settlement = defer.Deferred()
            self._settlement.addBoth(self._settled)
        self._settle_waiters.append(d)
        if self._settle_outcome is not None:
            self._settled(self._settle_outcome)
        elif first:
            self._run(self.machine.settle())
        return d

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

        def funded(tx: Any) -> list:
            crash_point("client-contract-funded")
            return m.contract_funded(tx, int(self.clock.seconds()))

        return d.addCallbacks(funded, lambda f: m.funding_failed(f.getErrorMessage()))

    def _store_channel(self, effect: fx.StoreClientChannel) -> Outcome[ClientEffect]:
        m = self.machine

        def stored(_: Any) -> list:
            crash_point("client-channel-stored")
            return m.channel_stored()

        return self.store.add_client_channel(effect.record).addCallback(stored)

    # Once per payment: a bound method as the store's callback, no closure made each time.

    def _store_change(self, effect: fx.StoreClientChange) -> Outcome[ClientEffect]:
        return self.store.record_client_change(effect.contract_txid, effect.client_change).addCallback(
            self._change_stored
        )

    def _change_stored(self, _: Any) -> list:
        crash_point("client-change-stored")
        return self.machine.change_stored()

    def _release_contract(self, effect: fx.ReleaseContract) -> Outcome[ClientEffect]:
        self.wallet.release(effect.funded)
        return None

    def _resume_refused(self, effect: fx.ResumeRefused) -> Outcome[ClientEffect]:
        self.log.info("server refused to resume channel {txid}; opening a new one",
                      txid=display_hex(effect.contract_txid))
        return None

    def _channel_opened(self, effect: fx.ChannelOpened) -> Outcome[ClientEffect]:
        self.log.info("channel {txid}: open ({how})", txid=display_hex(effect.contract_txid),
                      how="resumed" if effect.resumed else "new")
        self.opened.callback(ChannelOpen(effect.contract_txid, effect.resumed))
        return None

    def _payment_acked(self, effect: fx.PaymentAcked) -> Outcome[ClientEffect]:
        waiting, self._payment = self._payment, None
        if waiting is not None:
            waiting.callback(PaymentAck(effect.amount, effect.info))
        return None

    def _settlement_seen(self, effect: fx.SettlementSeen) -> Outcome[ClientEffect]:
        self._settlement_tx = effect.tx
        record = self.machine.record
        assert record is not None
        settled = replace(record, state=ClientChannelState.SETTLED, close_tx=effect.tx,
                          updated_at=int(self.clock.seconds()))
        self.machine.record = settled
        return self.store.update_client_channel(settled).addCallback(lambda _: [])

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
        self._close(reason)
        self.closed.callback(reason)
        error = ChannelClosed(reason, detail)
        if not self.opened.called:
            self.opened.errback(error)
        payment, self._payment = self._payment, None
        if payment is not None:
            payment.errback(error)
        settlement = self._settlement
        if settlement is None or settlement.called:
            return
        if self._settlement_tx is not None:
            settlement.callback(self._settlement_tx)
        elif reason is CloseReason.CLIENT_REQUESTED_CLOSE and self.machine.record is not None:
            self._learn_settlement_from_chain(settlement)
        else:
            settlement.errback(error)

    def _learn_settlement_from_chain(self, settlement: defer.Deferred[Any]) -> None:
        """A stock bitcoinj server closes without its CLOSE (§1.4): watch the contract output
        and record the transaction that spends it as the settlement."""
        record = self.machine.record
        assert record is not None
        watch: list = []

        def spent(event: SpendEvent) -> None:
            if settlement.called:
                return
            for w in watch:
                w.cancel()
            current = self.machine.record
            assert current is not None
            note = settlement_note(event.spending_tx, current)  # checks it pays our change
            if note:
                self.log.warn("channel {txid}: {note}", txid=display_hex(current.contract_txid), note=note)
            settled = replace(current, state=ClientChannelState.SETTLED, close_tx=event.spending_tx, note=note,
                              updated_at=int(self.clock.seconds()))
            self.machine.record = settled
            d = self.store.update_client_channel(settled)
            d.addCallback(lambda _: settlement.callback(SettledOnChain(event.spending_tx)))
            d.addErrback(settlement.errback)

        watch.append(self.chain.watch_spend(OutPoint(record.contract_txid, 0), spent))

