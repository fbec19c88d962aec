"""
The client's channels, one owner: :class:`ClientChannelManager` holds each stored channel's
lifecycle machine (``channel/client_lifecycle.py``) and the connection attached to it
(:class:`ClientChannel`), carries out the machines' effects through the wallet, chain, store
and clock, and is where an application and the CLI ask about channels.

- ``start()`` follows every stored channel that is not finished, as ``paychan watch`` does:
  the contract is offered to the node again, its output watched, and from ``expiry + 300``
  the refund broadcast on every block until the node takes it. Without ``start()`` (``paychan
  pay``) only the channels of this process's connections are followed, for their settlement.
- ``connect()`` (``net/client.py``) opens connections through :meth:`new_connection`; the
  connection tells the manager, through two narrow callbacks and never by writing records
  itself, when its channel is stored and when the server's CLOSE carried a settlement. A
  settlement learned from the chain goes back to the connection by its completion method
  ``settled_on_chain``.

Every store write is a compare-and-set transition (``store.transition_client``); events are
handed to the machines one at a time from a queue, never re-entrantly.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import assert_never

from twisted_paychan.chain.types import RejectKind, SpendEvent, TxState, TxStatus, display_hex, refusal
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.channel.records import ClientChannelRecord
from twisted_paychan.channel.settings import ClientSettings
from twisted_paychan.channel.states import IllegalTransition
from twisted_paychan.channel.errors import ChannelUsageError, CloseReason
from twisted_paychan.net.logfields import NO_PEER
from twisted_paychan.net.failed_opening import FailedOpening, Outcome, resolve_failed_opening
from twisted_paychan.net.subscribers import Subscribers
from twisted_paychan.net.client_channel import ClientChannel, ConnectionHooks
from twisted_paychan.store.interfaces import TransitionConflict as StoreConflict
from twisted_paychan.chain.interfaces import ICancellable, IChain, ISigner, IWallet
from twisted_paychan.store.interfaces import IChannelStore
from twisted_paychan.wire.messages import TwoWayChannelMessage

ChannelCallback = Callable[[lc.ChannelEvent], None]


class ClientChannelManager:
    log = Logger()

    def __init__(self, wallet: Optional[IWallet], chain: Optional[IChain], store: IChannelStore,
                 clock: IReactorTime) -> None:
        #: None where a command only reads (``paychan channels``) or only watches (``paychan
        #: watch``, no wallet): asking such a manager for what needs one is a usage error.
        self._wallet = wallet
        self._chain = chain
        self.store = store
        self.clock = clock
        self._machines: dict[bytes, lc.ClientLifecycle] = {}
        self._connections: dict[bytes, ClientChannel] = {}
        #: Connections over whose ``settle()`` waits for the settlement on the chain.
        self._closed_waiting: dict[bytes, ClientChannel] = {}
        self._timers: dict[bytes, IDelayedCall] = {}
        self._watches: dict[bytes, ICancellable] = {}
        self._block_watch: Optional[ICancellable] = None
        self._subscribers: Subscribers[lc.ChannelEvent] = Subscribers()
        self._idle_waiters: dict[bytes, list[defer.Deferred[None]]] = {}
        self._failed_openings: list[defer.Deferred[FailedOpening]] = []
        self._inbox: deque[tuple[bytes, lc.Event]] = deque()
        self._draining = False
        #: ``start()`` ran: this process looks after refunds too.
        self._started = False

    @property
    def wallet(self) -> IWallet:
        if self._wallet is None:
            raise ChannelUsageError("this ClientChannelManager was made without a wallet")
        return self._wallet

    @property
    def chain(self) -> IChain:
        if self._chain is None:
            raise ChannelUsageError("this ClientChannelManager was made without a chain")
        return self._chain

    # -- the application's API ----------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Follow every stored channel that is not finished (refunds included)."""
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        self._started = True
        self._block_watch = self.chain.watch_blocks(self._new_block)
        for record in await self.store.client_channels():
            self._track(record, rebroadcast=True)

    def stop(self) -> None:
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
        if self._block_watch is not None:
            self._block_watch.cancel()
            self._block_watch = None

    def list_channels(self) -> defer.Deferred[list[ClientChannelRecord]]:
        """Every stored client channel, oldest first, as stored."""
        d: defer.Deferred[list[ClientChannelRecord]] = self.store.client_channels()
        return d

    def channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ClientChannelRecord]]:
        d: defer.Deferred[Optional[ClientChannelRecord]] = self.store.client_channel(contract_txid)
        return d

    def connection(self, contract_txid: bytes) -> Optional[ClientChannel]:
        """The live connection on this channel, if any."""
        return self._connections.get(contract_txid)

    def subscribe(self, callback: ChannelCallback) -> Callable[[], None]:
        """Call ``callback`` with every :data:`ChannelEvent`; returns the unsubscriber."""
        return self._subscribers.add(callback)

    def new_connection(
        self,
        settings: ClientSettings,
        server_id: bytes,
        signer: ISigner,
        send: Callable[[TwoWayChannelMessage], None],
        close: Callable[[CloseReason], None],
        resume: Optional[ClientChannelRecord] = None,
    ) -> ClientChannel:
        """A connection object for ``connect()`` (or any transport), attached to this manager
        once its channel is stored or resumed."""
        channel: ClientChannel

        def opened(_: Any) -> Any:
            if channel.record is not None:
                self._attach(channel.record, channel)
            return _

        hooks = ConnectionHooks(
            channel_stored=lambda record: self._attach(record, channel),
            settlement_received=self._settlement_received,
        )
        channel = ClientChannel(self.wallet, self.store, settings, server_id, signer, send, close,
                                self.clock, resume, hooks=hooks)
        channel.opened.addCallback(opened)
        if resume is None:  # a new channel whose opening may fail after its contract left
            channel.opened.addErrback(self._opening_failed, channel, settings.fee_rate)
        return channel

    def follow(self, record: ClientChannelRecord) -> None:
        """Follow one stored channel for its settlement, as if a connection of this process had
        used it (refunds stay with ``start()``): ``paychan pay`` asks this of a channel the
        server may have settled while the client was away, and hears the answer by ``subscribe``."""
        self._track(record)
        self._feed(record.contract_txid, lc.SettlementAwaited(False, self._now()))

    def _opening_failed(self, failure: Failure, channel: ClientChannel, fee_rate: int) -> Failure:
        """The opening failed: if the contract had left (the channel is stored), find out
        whether it reached a chain, and take the coins back if not (``net/failed_opening``)."""
        record = channel.record
        if record is not None and self._wallet is not None and self._chain is not None:
            d = defer.ensureDeferred(self._resolve_opening(record, failure.getErrorMessage(), fee_rate))
            self._failed_openings.append(d)
        return failure

    async def _resolve_opening(self, record: ClientChannelRecord, why: str, fee_rate: int) -> FailedOpening:
        txid = record.contract_txid
        result = await resolve_failed_opening(self.wallet, self.chain, record, fee_rate)
        if result.outcome is Outcome.RECLAIMED:
            assert result.reclaim_tx is not None
            self._track(record)
            stored: defer.Deferred[None] = defer.Deferred()
            self._idle_waiters.setdefault(txid, []).append(stored)
            self._feed(txid, lc.OpeningFailed(result.reclaim_tx, why, self._now()))
            await stored
        elif result.outcome is Outcome.UNDECIDED:
            self.log.warn("channel {txid}: opening failed ({why}); {detail}; the channel stays open and its refund "
                          "is due after expiry", txid=display_hex(txid), why=why, detail=result.detail)
        else:
            self.log.info("channel {txid}: opening failed ({why}), but {detail}: the channel stands",
                          txid=display_hex(txid), why=why, detail=result.detail)
        return result

    def failed_openings(self) -> defer.Deferred[list[FailedOpening]]:
        """Fires once every failed opening so far is resolved (a command waits for it before
        it exits), with their outcomes."""
        pending, self._failed_openings = self._failed_openings, []
        return defer.gatherResults(pending)

    def release_abandoned_contracts(self) -> defer.Deferred[list[bytes]]:
        return defer.ensureDeferred(release_abandoned_contracts(self.wallet, self.store, self.chain))

    # -- connections --------------------------------------------------------------------------

    def _attach(self, record: ClientChannelRecord, channel: ClientChannel) -> None:
        txid = record.contract_txid
        if self._connections.get(txid) is channel:
            return
        self._connections[txid] = channel
        channel.closed.addBoth(lambda r: self._detach(txid, channel, r))
        self._track(record)

    def _detach(self, txid: bytes, channel: ClientChannel, result: Any) -> Any:
        if self._connections.get(txid) is channel:
            del self._connections[txid]
            if channel.awaiting_settlement_from_chain:
                self._closed_waiting[txid] = channel  # until the chain shows the settlement
                self._feed(txid, lc.SettlementAwaited(channel.exhausted, self._now()))
            self._release_if_done(txid)
        return result

    def _settlement_received(self, record: ClientChannelRecord, tx: bytes) -> defer.Deferred[None]:
        """The connection's CLOSE carried a settlement: the lifecycle stores it; the Deferred
        fires once it has (the connection closes after that)."""
        txid = record.contract_txid
        self._track(record)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.setdefault(txid, []).append(d)
        self._feed(txid, lc.SettlementReceived(tx, self._now()))
        return d

    # -- feeding the machines -----------------------------------------------------------------

    def _track(self, record: ClientChannelRecord, rebroadcast: bool = False) -> None:
        txid = record.contract_txid
        if txid in self._machines and not (self._started and not self._machines[txid].refunds):
            return
        self._machines.setdefault(txid, lc.ClientLifecycle())
        current = self._machines[txid].record or record
        self._feed(txid, lc.Loaded(current, refunds=self._started, rebroadcast=rebroadcast))

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _new_block(self, tip: Any) -> None:
        for txid, machine in list(self._machines.items()):
            if machine.refund_due:
                self._feed(txid, lc.BlockConnected(self._now()))

    def _contract_spent(self, txid: bytes, event: SpendEvent) -> None:
        confirmed = event.status.state is TxState.CONFIRMED

        def spent(record: Optional[ClientChannelRecord]) -> None:
            change = None if record is None else record.client_change
            self._feed(txid, lc.ContractSpent(event.spending_tx, confirmed, self._now(), change))

        d = self.store.client_channel(txid)  # for the latest c, which payments change
        d.addCallback(spent)
        d.addErrback(lambda f: self.log.failure("channel {txid} (peer {peer}): reading it after a spend failed", f,
                                                txid=display_hex(txid), peer=self._peer(txid)))

    def _feed(self, txid: bytes, event: lc.Event) -> None:
        self._inbox.append((txid, event))
        if self._draining:
            return  # the loop below takes it next: no machine is entered twice at once
        self._draining = True
        try:
            while self._inbox:
                key, ev = self._inbox.popleft()
                machine = self._machines.get(key)
                if machine is None:
                    continue
                try:
                    effects = machine.handle(ev)
                except Exception:
                    self.log.failure("channel {txid} (peer {peer}): lifecycle failed on {event}", txid=display_hex(key), peer=self._peer(key), event=ev)
                    continue
                for effect in effects:
                    try:
                        self._perform(key, effect)
                    except Exception:
                        self.log.failure("channel {txid} (peer {peer}): {effect} failed", txid=display_hex(key), peer=self._peer(key), effect=effect)
                if machine.idle:
                    waiters = self._idle_waiters.pop(key, [])
                    for d in waiters:
                        d.callback(None)
                self._release_if_done(key)
        finally:
            self._draining = False

    def _release_if_done(self, txid: bytes) -> None:
        """A settled, refunded or failed channel that holds nothing more (no timer, watch,
        connection, waiter or queued event) leaves the manager, as the server's do (issue #21):
        a client that opens channels for months keeps only those that still need it, and each
        block looks at those only. Asked about again, the store answers (``_track`` loads it)."""
        machine = self._machines.get(txid)
        if (machine is not None and machine.finished and machine.idle and txid not in self._timers
                and txid not in self._watches and txid not in self._connections
                and txid not in self._closed_waiting and txid not in self._idle_waiters
                and not any(key == txid for key, _ in self._inbox)):
            del self._machines[txid]

    # -- effects ------------------------------------------------------------------------------

    def _perform(self, txid: bytes, effect: lc.Effect) -> None:
        if isinstance(effect, lc.PersistTransition):
            self._persist(txid, effect)
        elif isinstance(effect, lc.Broadcast):
            self._broadcast(txid, effect)
        elif isinstance(effect, lc.CheckContract):
            self._check_contract(txid, effect)
        elif isinstance(effect, lc.ArmTimer):
            self._cancel_timer(txid)
            delay = max(0.0, effect.at - self.clock.seconds())
            self._timers[txid] = self.clock.callLater(delay, self._refund_due, txid)
        elif isinstance(effect, lc.CancelTimer):
            self._cancel_timer(txid)
        elif isinstance(effect, lc.WatchOutpoint):
            if txid not in self._watches:
                self._watches[txid] = self.chain.watch_spend(effect.outpoint, self._spend_watcher(txid))
        elif isinstance(effect, lc.Unwatch):
            watch = self._watches.pop(txid, None)
            if watch is not None:
                watch.cancel()
        elif isinstance(effect, lc.Notify):
            self._notify(effect.event)
        else:
            assert_never(effect)

    def _spend_watcher(self, txid: bytes) -> Callable[[SpendEvent], None]:
        def spent(event: SpendEvent) -> None:
            self._contract_spent(txid, event)

        return spent

    def _persist(self, txid: bytes, effect: lc.PersistTransition) -> None:
        d: defer.Deferred[ClientChannelRecord] = self.store.transition_client(
            txid, effect.expected, effect.new, **effect.changes)

        def failed(f: Failure) -> "lc.Event | defer.Deferred[lc.Event]":
            if isinstance(f.value, StoreConflict):
                reread: defer.Deferred[Optional[ClientChannelRecord]] = self.store.client_channel(txid)
                return reread.addCallback(lc.TransitionConflict)
            if isinstance(f.value, IllegalTransition):
                return lc.TransitionFailed(f"illegal transition: {f.getErrorMessage()}")
            self.log.failure("channel {txid} (peer {peer}): storing {new} failed", f, txid=display_hex(txid), peer=self._peer(txid),
                             new=effect.new.value)
            return lc.TransitionFailed(f.getErrorMessage())

        answered: defer.Deferred[lc.Event] = d.addCallbacks(lc.TransitionStored, failed)
        answered.addCallback(lambda event: self._feed(txid, event))
        answered.addErrback(lambda f: self.log.failure("channel {txid} (peer {peer}): transition answer lost", f, txid=display_hex(txid), peer=self._peer(txid)))

    def _broadcast(self, txid: bytes, effect: lc.Broadcast) -> None:
        def refused(f: Failure) -> lc.Event:
            kind, reason = refusal(f.value)
            return lc.BroadcastRefused(effect.role, kind, reason)

        d = defer.maybeDeferred(self.chain.broadcast, effect.tx)
        answered: defer.Deferred[lc.Event] = d.addCallbacks(lambda _: lc.BroadcastAccepted(effect.role), refused)
        answered.addCallback(lambda event: self._feed(txid, event))

    def _check_contract(self, txid: bytes, effect: lc.CheckContract) -> None:
        def known(status: TxStatus) -> lc.Event:
            return lc.ContractStatus(status.state is not TxState.UNKNOWN)

        def failed(f: Failure) -> lc.Event:  # ends this attempt; the next block tries again
            return lc.BroadcastRefused(lc.TxRole.CONTRACT, RejectKind.UNREACHABLE, f.getErrorMessage())

        d = defer.maybeDeferred(self.chain.tx_status, effect.txid)
        answered: defer.Deferred[lc.Event] = d.addCallbacks(known, failed)
        answered.addCallback(lambda event: self._feed(txid, event))

    def _refund_due(self, txid: bytes) -> None:
        self._timers.pop(txid, None)
        self._feed(txid, lc.RefundDue(self._now()))

    def _cancel_timer(self, txid: bytes) -> None:
        call = self._timers.pop(txid, None)
        if call is not None and call.active():
            call.cancel()

    def _peer(self, txid: bytes) -> str:
        """The address of the server a channel's live connection talks to, for log lines."""
        connection = self._connections.get(txid)
        return connection.peer if connection is not None else NO_PEER

    def _notify(self, event: lc.ChannelEvent) -> None:
        txid = display_hex(event.contract_txid)
        peer = self._peer(event.contract_txid)
        if isinstance(event, lc.ChannelSettled):
            if event.note:
                self.log.warn("channel {txid} (peer {peer}): {note}", txid=txid, peer=peer, note=event.note)
            self.log.info("channel {txid} (peer {peer}): settled", txid=txid, peer=peer)
            connection = self._connections.get(event.contract_txid) or self._closed_waiting.pop(event.contract_txid, None)
            if connection is not None and event.from_chain:
                connection.settled_on_chain(event.tx)
        elif isinstance(event, lc.ChannelRefunded):
            self.log.info("channel {txid} (peer {peer}): refunded", txid=txid, peer=peer)
        elif isinstance(event, lc.ChannelFailed):
            self.log.warn("channel {txid} (peer {peer}): {note}", txid=txid, peer=peer, note=event.note)
        elif isinstance(event, lc.ChannelExpiring):
            self.log.info("channel {txid} (peer {peer}): expiring; refund due", txid=txid, peer=peer)
        elif isinstance(event, lc.RefundBroadcast):
            self.log.info("channel {txid} (peer {peer}): refund broadcast", txid=txid, peer=peer)
        elif isinstance(event, lc.BroadcastNotAccepted):
            self.log.info("channel {txid} (peer {peer}): {role} not accepted yet ({kind}: {why}); retrying each block",
                          txid=txid, peer=peer, role=event.role.value, kind=event.kind.value, why=event.reason)
        elif isinstance(event, lc.StoreTrouble):
            self.log.warn("channel {txid} (peer {peer}): {detail}", txid=txid, peer=peer, detail=event.detail)
        else:
            assert_never(event)
        self._subscribers.notify(event)


async def release_abandoned_contracts(wallet: IWallet, store: IChannelStore, chain: IChain) -> list[bytes]:
    """After a crash between funding a contract and storing its channel, the wallet still holds
    the contract's coins although nothing will ever send it: give them back. A funded
    transaction is abandoned when no stored channel has it as its contract and the chain does
    not know it (so it cannot have left this process). Returns the txids released."""
    contracts = {r.contract_txid for r in await store.client_channels()}
    released = []
    for funded in wallet.reserved_transactions():
        if funded.txid in contracts:
            continue
        status = await chain.tx_status(funded.txid)
        if status.state is TxState.UNKNOWN:
            wallet.release(funded)
            released.append(funded.txid)
    return released
