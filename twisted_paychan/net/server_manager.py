"""
The one owner of the server's channels (LDK's ``ChannelManager`` is the model).

``ServerChannelManager`` holds, for each stored channel it has met, the channel's lifecycle
machine (``channel.server_lifecycle``) and the connection attached to it, and carries out the
machine's effects through the wallet, the chain, the store and the clock: timers on the
injected ``IReactorTime``, watches through ``IChain``, every state change by compare-and-set
(``IChannelStore.transition_server``). The application, ``twistd paychan``, the operator socket
and ``paychan settle`` ask it, never a connection: ``list_channels``, ``channel``, ``settle``,
``settle_all``, ``subscribe``.

Connections (``ServerChannel``) are made by :meth:`ServerChannelManager.connection` and reach
the manager only through the narrow calls of their ``ConnectionPorts``; the manager tells a
connection things only through its machine (``close``, ``settled_elsewhere``).

A resume of a channel no live connection holds attaches the new connection at once. A resume
of a channel a live connection holds does not evict it (issue #14 item 4: the contract txid is
public, so naming it proves nothing; bitcoinj evicts): the newcomer is told CHANNEL_OPEN, as a
stock client needs before it pays, but is only *on probation* (``_Channel.probation``). Its
first UPDATE_PAYMENT, once its machine has checked the client's signature, is the proof that it
holds the client key: if b is at least the stored one and nobody paid on the channel since the
newcomer read it, the newcomer takes the channel over and the old connection is closed (after
its payments in flight are acknowledged); otherwise that update gets ERROR{BAD_TRANSACTION}
and nothing changes for the old connection. Until then the newcomer can neither pay nor settle
the channel. Either way a connection starts paying from the record read after every payment
the previous one had in flight is stored: one writer of b per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import assert_never

from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.settlement import SettlementRejected, SettlementUnaffordable, build_settlement
from twisted_paychan.chain.interfaces import ICancellable, IChain, ISigner, IWallet
from twisted_paychan.wallet.remote import ISettlementSigner, Refused, SignedSettlement, SignerUnavailable
from twisted_paychan.chain.types import ChainTip, RejectKind, SpendEvent, TxState, TxStatus, display_hex, refusal
from twisted_paychan.channel import server_lifecycle as lc
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.channel.settings import ServerSettings
from twisted_paychan.faults import crash_point
from twisted_paychan.net.logfields import NO_PEER, iso_time
from twisted_paychan.net.observers import ServerObserver
from twisted_paychan.net.rebroadcast import RebroadcastSchedule
from twisted_paychan.net.subscribers import Subscribers
from twisted_paychan.net.server_channel import ConnectionPorts, IServerHandler, NullServerHandler, ServerChannel
from twisted_paychan.store.interfaces import ChannelNotOpen, IChannelStore, ServerTotals, StoreError, TransitionConflict
from twisted_paychan.store.ownership import IChannelOwnership, LocalOwnership, SettlementStoredElsewhere
from twisted_paychan.wire.messages import TwoWayChannelMessage

S = ServerChannelState

#: States a channel is settled from by ``settle_all``.
SETTLEABLE = frozenset({S.OPEN, S.STUCK, S.SETTLING})

#: States whose channels need no machine until someone asks about them.
_DORMANT = frozenset({S.SETTLED, S.REFUNDED, S.CONTRACT_FAILED})
#: The others: what a start loads (a long history of dormant ones is never read again).
_LIVE = frozenset(S) - _DORMANT

#: What a contract output's watch says when nothing needs to be offered to the node again.
_SEEN_SPENT = frozenset({TxState.MEMPOOL, TxState.CONFIRMED})

_SETTLE_BY = {
    CloseReason.CLIENT_REQUESTED_CLOSE: lc.SettleBy.CLIENT,
    CloseReason.CHANNEL_EXHAUSTED: lc.SettleBy.EXHAUSTED,
}

_TIMER_EVENTS: dict[lc.TimerKind, lc.LifecycleEvent] = {
    lc.TimerKind.SETTLE: lc.SettleDue(),
    lc.TimerKind.CONFIRM: lc.ConfirmationDue(),
    lc.TimerKind.CONTRACT_RETRY: lc.ContractRetryDue(),
}


@dataclass(frozen=True)
class SettleResult:
    """One channel's outcome of ``settle_all``."""

    contract_txid: bytes
    settlement_tx: Optional[bytes]
    error: Optional[str]


Subscriber = Callable[[lc.ChannelEvent], None]


class _Channel:
    """One channel's machine, its attached connection, and the I/O handles of its effects.
    Effects run in order; one with an outcome holds back the ones after it until its outcome
    is fed back (the machine never has two outstanding)."""

    # Slots, and lists rather than deques: one of these per open channel, mostly idle.
    __slots__ = ("manager", "machine", "txid", "connection", "probation", "timers", "watches", "waiters", "writing", "written",
                 "output_spend", "rebroadcast", "built_on", "_queue", "_running", "_blocked", "_idle")

    def __init__(self, manager: "ServerChannelManager", machine: lc.ServerLifecycle) -> None:
        self.manager = manager
        self.machine = machine
        self.txid = machine.record.contract_txid
        self.connection: Optional[ServerChannel] = None
        #: Resumes that came while a live connection held the channel, each with the b it was
        #: told (see the module docstring); empty almost always.
        self.probation: dict[ServerChannel, int] = {}
        self.timers: dict[lc.TimerKind, IDelayedCall] = {}
        self.watches: dict[lc.WatchKind, list[ICancellable]] = {}
        #: Whoever waits for the outcome of the settlement asked for (operator, connection).
        self.waiters: list[defer.Deferred[bytes]] = []
        #: Payments of the attached connection not yet durable, and who waits for them.
        self.writing = 0
        self.written: list[defer.Deferred[None]] = []
        #: What the contract output's watch last said of its spend (None: nothing yet).
        self.output_spend: Optional[TxState] = None
        #: When a settlement the chain does not show is offered again (``rebroadcast``).
        self.rebroadcast = RebroadcastSchedule()
        #: The stored settlement (None: none) when the one being built was started: only it may
        #: be replaced by the new one (``IChannelOwnership.store_settlement``).
        self.built_on: Optional[bytes] = None
        self._queue: list[lc.LifecycleEffect] = []
        self._running = False
        self._blocked = False
        #: Who waits for every effect asked for so far to be done.
        self._idle: list[defer.Deferred[None]] = []

    def feed(self, event: lc.LifecycleEvent) -> None:
        self.run(self.machine.handle(event, self.manager.clock.seconds()))

    def run(self, effects: list[lc.LifecycleEffect]) -> None:
        self._queue.extend(effects)
        if self._running or self._blocked:
            return
        self._running = True
        try:
            while self._queue and not self._blocked:
                outcome = self.manager._perform(self, self._queue.pop(0))
                if outcome is not None:
                    self._blocked = True
                    outcome.addCallback(self._outcome)
                    outcome.addErrback(self.manager._lifecycle_failed, self)
        finally:
            self._running = False
        if self._idle and not self._blocked and not self._queue:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)
        self.manager._note_settling(self)
        self.manager._release_if_done(self)

    def done(self) -> bool:
        """Finished and holding nothing: no timer, watch, connection, waiter or effect."""
        return (self.machine.state in _DORMANT and not self.timers and not any(self.watches.values())
                and self.connection is None and not self.probation and not self.waiters and not self.writing
                and not self._queue and not self._blocked and not self._running and not self._idle)

    def idle(self) -> defer.Deferred[None]:
        """Fires once every effect asked for so far is done (a write durable, say)."""
        if not self._blocked and not self._queue:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    def _outcome(self, event: lc.LifecycleEvent) -> None:
        self._blocked = False
        self._queue[0:0] = self.machine.handle(event, self.manager.clock.seconds())
        if not self._running:
            self.run([])

    # -- payments in flight (one writer of b) --------------------------------------------------

    def payment_written(self, result: object) -> object:
        self.writing -= 1
        if not self.writing:
            waiting, self.written = self.written, []
            for d in waiting:
                d.callback(None)
        return result

    def live(self) -> Optional[ServerChannel]:
        """The attached connection, if it is not closing."""
        connection = self.connection
        return connection if connection is not None and connection.close_reason is None else None

    def payments_stored(self) -> defer.Deferred[None]:
        if not self.writing:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.written.append(d)
        return d


class ServerChannelManager:
    """Every stored server channel, and the connections attached to them. See the module
    docstring."""

    log = Logger()

    def __init__(self, wallet: IWallet, chain: IChain, store: IChannelStore, settings: ServerSettings,
                 clock: IReactorTime, policy: Optional[lc.LifecyclePolicy] = None) -> None:
        self.wallet = wallet
        self.chain = chain
        self.store = store
        self.settings = settings
        self.clock = clock
        self.policy = policy or lc.LifecyclePolicy(fee_rate=settings.effective_fee_rate,
                                                   settle_offset=settings.settle_offset,
                                                   prune_after=settings.prune_after)
        self._channels: dict[bytes, _Channel] = {}
        self._subscribers: Subscribers[lc.ChannelEvent] = Subscribers()
        self._block_watch: Optional[ICancellable] = None
        self._started = False
        self._prune_call: Optional[IDelayedCall] = None
        #: The settlement last logged per channel: a request that broadcasts it again (the
        #: operator asking twice, a client's CLOSE after it) is not logged as news.
        self._logged_settlements: dict[bytes, bytes] = {}
        #: The operator's instruments (``api.metrics``); each new connection carries them.
        self.observer: Optional[ServerObserver] = None
        self._offer_call: Optional[IDelayedCall] = None
        self._offer_height = -1
        #: Who may write b across nodes (``store.ownership``; one process: the store itself).
        self.ownership: IChannelOwnership = LocalOwnership(store)
        #: Whether ``start`` looks after a stored channel (its timers and watches); in a
        #: cluster, only the channels whose expiry duty this node holds (``net.duty``).
        self.has_duty: Callable[[ServerChannelRecord], bool] = lambda record: True
        #: The channels in SETTLING, the only ones a block may concern (``_offer_settlements``).
        self._settling: dict[bytes, _Channel] = {}
        self.ports = ConnectionPorts(
            new_channel_key=self._new_channel_key,
            find_channel=self._find_channel,
            store_channel=self._store_channel,
            broadcast_contract=self._broadcast_contract,
            store_payment=self._store_payment,
            settle=self._settle_for_connection,
            opened=self._opened,
            paid=self._paid,
            closed=self._closed,
        )

    @property
    def retry_interval(self) -> float:
        return self.policy.retry_interval

    @property
    def contract_confirm_timeout(self) -> float:
        return self.policy.contract_confirm_timeout

    # -- the API ----------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Load every stored channel that is not finished: rebroadcast what it depends on, arm
        its timers (ones already past fire at once), watch its contract."""
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        if self._block_watch is None:
            self._block_watch = self.chain.watch_blocks(self._new_block)
        self._started = True
        if self._prune_call is None:
            self._prune_call = self.clock.callLater(self.policy.prune_interval, self._prune_due)
        try:
            await self.prune()
        except Exception:  # the chain unreachable, say: the channels start all the same
            self.log.failure("pruning failed contracts at start failed")
        for record in await self.store.server_channels(_LIVE):
            channel = self._channels.get(record.contract_txid)
            if channel is None:
                if not self.has_duty(record):
                    continue
                channel = self._add(record)
            channel.feed(lc.Loaded())

    def take_duty(self, contract_txid: bytes) -> defer.Deferred[None]:
        """Look after a stored channel from now on (its expiry duty came to this node): as
        ``start`` does for each channel, unless its timers or watches already run here."""
        def load(channel: Optional[_Channel]) -> None:
            if channel is not None and not channel.timers and not any(channel.watches.values()):
                channel.feed(lc.Loaded())

        held = self._channels.get(contract_txid)
        if (held is not None and held.connection is None and not held.probation and not held.timers
                and not any(held.watches.values()) and not held.waiters and not held._blocked and not held._queue):
            # Met here earlier but idle: the record it holds may be older than another node's
            # writes (a settlement stored there), so it is read again.
            self._forget(contract_txid)
        return self._ensure(contract_txid).addCallback(load)

    def drop_duty(self, contract_txid: bytes) -> None:
        """Stop a channel's timers and watches (its expiry duty went to another node); a
        connection attached to it stays."""
        channel = self._channels.get(contract_txid)
        if channel is not None:
            channel.feed(lc.Stopped())
            self._release_if_done(channel)

    def stop(self) -> None:
        """Cancel every timer and watch (the channels stay stored; ``start`` re-arms them)."""
        self._started = False
        if self._prune_call is not None:
            if self._prune_call.active():
                self._prune_call.cancel()
            self._prune_call = None
        if self._block_watch is not None:
            self._block_watch.cancel()
            self._block_watch = None
        if self._offer_call is not None:
            if self._offer_call.active():
                self._offer_call.cancel()
            self._offer_call = None
        for channel in self._channels.values():
            channel.feed(lc.Stopped())

    def connection(self, handler: Optional[IServerHandler], send: Callable[[TwoWayChannelMessage], None],
                   close: Callable[[CloseReason], None]) -> ServerChannel:
        """A new client connection's channel object, reaching this manager through its ports."""
        connection = ServerChannel(self.ports, self.settings, handler if handler is not None else NullServerHandler(),
                                   send, close, self.clock)
        if self.observer is not None:
            connection.observer = self.observer
            self.observer.connected(connection)
        return connection

    def connection_of(self, contract_txid: bytes) -> Optional[ServerChannel]:
        """The live connection holding the channel, if any (for the operator: its peer)."""
        channel = self._channels.get(contract_txid)
        return channel.live() if channel is not None else None

    def list_channels(
        self, states: Optional[Collection[S]] = None, limit: Optional[int] = None, offset: int = 0
    ) -> defer.Deferred[list[ServerChannelRecord]]:
        """The stored server channels in ``states`` (all when None), oldest first, as stored now
        (b included); with ``limit``, the newest page (``IChannelStore.server_channels``)."""
        return self.store.server_channels(states, limit, offset)

    def totals(self) -> defer.Deferred[ServerTotals]:
        """Counts and sums over every stored channel, from the store's aggregate query."""
        return self.store.server_totals()

    def channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ServerChannelRecord]]:
        return self.store.server_channel(contract_txid)

    def settle(self, contract_txid: bytes) -> defer.Deferred[bytes]:
        """Settle now on the operator's request, whether or not a client is connected (a
        connected client gets CLOSE with the settlement); fires with the raw settlement, or
        fails with ``KeyError`` (no such channel), ``SettlementUnaffordable`` or
        ``SettlementRejected`` (the channel is kept, STUCK, and retried)."""
        return self._request_settlement(contract_txid, lc.SettleBy.OPERATOR)

    def settle_all(self) -> defer.Deferred[list[SettleResult]]:
        """Settle every open, stuck or settling channel, one after the other."""
        return defer.ensureDeferred(self._settle_all())

    async def _settle_all(self) -> list[SettleResult]:
        results = []
        for record in await self.store.server_channels(SETTLEABLE):
            try:
                tx = await self.settle(record.contract_txid)
            except Exception as e:  # reported to the operator; the channel is kept
                results.append(SettleResult(record.contract_txid, None, f"{type(e).__name__}: {e}"))
            else:
                results.append(SettleResult(record.contract_txid, tx, None))
        return results

    def prune(self) -> defer.Deferred[int]:
        """Delete every channel whose contract the node refused at its first broadcast (so it
        never paid more than the contract's initial payment, ``lc.never_accepted``), at least
        ``policy.prune_after`` seconds ago, and that the chain does not know now (issue #14
        item 3): its record was stored before the broadcast for the case the node takes the
        contract after all, and the grace and the chain's answer cover that. Channels whose
        contract was double-spent or never confirmed are kept: they may hold payments. Fires
        with the number deleted. Run at ``start`` and every ``policy.prune_interval``."""
        return defer.ensureDeferred(self._prune())

    async def _prune(self) -> int:
        now = self.clock.seconds()
        pruned = 0
        for record in await self.store.server_channels([S.CONTRACT_FAILED]):
            if (not lc.never_accepted(record) or record.settlement_tx is not None
                    or now - max(record.updated_at, record.created_at) < self.policy.prune_after):
                continue
            txid = record.contract_txid
            status: TxStatus = await defer.maybeDeferred(self.chain.tx_status, txid)
            if status.state is not TxState.UNKNOWN:
                continue  # the node has it after all: the lifecycle's watches decide
            try:
                await self.store.prune_server_channel(txid, record.best_value)
            except StoreError as e:  # changed meanwhile: kept, looked at again next time
                self.log.info("channel {txid} (peer {peer}): not pruned: {why}", txid=display_hex(txid),
                              peer=self._peer(txid), why=str(e))
                continue
            channel = self._forget(txid)
            if channel is not None:
                channel.feed(lc.Stopped())
            pruned += 1
        if pruned:
            self.log.info("pruned {n} channel(s) whose contract the node never took", n=pruned)
        return pruned

    def _prune_due(self) -> None:
        self._prune_call = self.clock.callLater(self.policy.prune_interval, self._prune_due)
        self.prune().addErrback(lambda f: self.log.failure("pruning failed contracts failed", f))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(ChannelEvent)`` for every channel event; returns the unsubscriber."""
        return self._subscribers.add(callback)

    # -- channels ---------------------------------------------------------------------------

    def _add(self, record: ServerChannelRecord) -> _Channel:
        channel = self._channels[record.contract_txid] = _Channel(self, lc.ServerLifecycle(record, self.policy))
        self._note_settling(channel)
        return channel

    def _note_settling(self, channel: _Channel) -> None:
        if channel.machine.state is S.SETTLING and self._channels.get(channel.txid) is channel:
            self._settling[channel.txid] = channel
        elif self._settling.get(channel.txid) is channel:
            del self._settling[channel.txid]

    def _release_if_done(self, channel: _Channel) -> None:
        """A settled, refunded or failed channel with nothing left to do is dropped (issue #21):
        a server that runs for months holds only the channels that still need it. Asked about
        again, it is read back from the store (``_ensure``)."""
        if channel.done() and self._channels.get(channel.txid) is channel:
            self._forget(channel.txid)
            self._logged_settlements.pop(channel.txid, None)

    def _forget(self, contract_txid: bytes) -> Optional[_Channel]:
        """Drop the channel's machine, and with it its place among the SETTLING ones, so no
        block looks at a machine the manager no longer holds; the one dropped, if any."""
        self._settling.pop(contract_txid, None)
        return self._channels.pop(contract_txid, None)

    def _ensure(self, contract_txid: bytes) -> defer.Deferred[Optional[_Channel]]:
        """The channel's machine, made from its stored record if this manager has not met it."""
        channel = self._channels.get(contract_txid)
        if channel is not None:
            return defer.succeed(channel)

        def loaded(record: Optional[ServerChannelRecord]) -> Optional[_Channel]:
            if record is None:
                return None
            return self._channels.get(contract_txid) or self._add(record)

        return self.store.server_channel(contract_txid).addCallback(loaded)

    def _request_settlement(self, contract_txid: bytes, by: lc.SettleBy) -> defer.Deferred[bytes]:
        def ask(channel: Optional[_Channel]) -> defer.Deferred[bytes]:
            if channel is None:
                raise KeyError(f"no stored channel {display_hex(contract_txid)}")
            waiter: defer.Deferred[bytes] = defer.Deferred()
            channel.waiters.append(waiter)
            channel.feed(lc.SettleRequested(by))
            return waiter

        return self._ensure(contract_txid).addCallback(ask)

    def _new_block(self, tip: ChainTip) -> None:
        # Looked at once the spend events delivered with this block are in (the watches say
        # what the node still has), not in the middle of them.
        self._offer_height = tip.height
        if self._offer_call is None:
            self._offer_call = self.clock.callLater(0, self._offer_settlements)

    def _offer_settlements(self) -> None:
        # A settlement is offered again only while its contract output's watch shows no spend
        # (the node dropped it, or never took it), and then less often each time: every one
        # offered on every block, each offer refreshing every watch, made a block cost seconds
        # (issue #21). Only SETTLING channels are looked at: a block costs the same with ten
        # thousand channels open as with ten.
        self._offer_call = None
        height = self._offer_height
        for channel in list(self._settling.values()):
            if (channel.machine.state is S.SETTLING and channel.output_spend not in _SEEN_SPENT
                    and channel.rebroadcast.due(height)):
                channel.feed(lc.BlockConnected(height))

    # -- what connections ask (their ports) --------------------------------------------------

    def _new_channel_key(self, connection: ServerChannel) -> defer.Deferred[ISigner]:
        """A provisional key: stored only with the channel record that names it
        (``_store_channel``), forgotten when the connection ends without one (``_closed``)."""
        def lent(signer: ISigner) -> ISigner:
            if connection.close_reason is not None:  # gone while the wallet answered
                self.wallet.forget_channel_key(signer.public_key)
            return signer

        d: defer.Deferred[ISigner] = defer.maybeDeferred(self.wallet.provisional_channel_key)
        return d.addCallback(lent)

    def _find_channel(self, contract_txid: bytes, connection: ServerChannel) -> defer.Deferred[Optional[ServerChannelRecord]]:
        def found(channel: Optional[_Channel]) -> defer.Deferred[Optional[ServerChannelRecord]]:
            if channel is None or channel.machine.state is not S.OPEN or channel.machine.contract_pending:
                if channel is not None:
                    self._release_if_done(channel)  # a finished one read back only to say no
                return defer.succeed(None)
            # One writer of b: read the record once every payment in flight is stored.
            d = channel.payments_stored()
            d.addCallback(lambda _: self.store.server_channel(contract_txid))
            return d.addCallback(attach, channel)

        def attach(record: Optional[ServerChannelRecord], channel: _Channel) -> Optional[ServerChannelRecord]:
            if record is None or record.state is not S.OPEN or connection.close_reason is not None:
                return None
            holder = channel.live()
            if holder is not None and holder is not connection:
                # Not evicted on the newcomer's word: it must prove the client key first.
                self.log.info("channel {txid} (peer {peer}): resumed while another connection ({holder}) holds "
                              "it; on probation until a signed payment", txid=display_hex(contract_txid),
                              peer=connection.peer or NO_PEER, holder=holder.peer or NO_PEER)
                channel.probation[connection] = record.best_value
            else:
                channel.connection = connection
            self.ownership.attached(contract_txid, connection, record.best_value)
            return record

        return self._ensure(contract_txid).addCallback(found)

    def _store_channel(self, record: ServerChannelRecord, connection: ServerChannel) -> defer.Deferred[None]:
        def stored(_: None) -> None:
            self.log.info("channel {txid} (peer {peer}): stored, value {value} sat, expires {expiry} ({expiry_unix})",
                          txid=display_hex(record.contract_txid), peer=connection.peer or NO_PEER, value=record.value,
                          expiry=iso_time(record.expiry), expiry_unix=record.expiry)
            channel = self._add(record)
            if connection.close_reason is None:
                channel.connection = connection
                self.ownership.attached(record.contract_txid, connection, record.best_value)
            channel.feed(lc.Created())

        # The key is durable before the record that names it: a crash between them leaves one
        # unused key, never a channel whose key is lost. (A wallet may commit it in a thread and
        # answer with a Deferred: the record waits for it.)
        kept = self.wallet.keep_channel_key(record.server_key)
        if kept is None:
            return self.store.add_server_channel(record).addCallback(stored)
        return kept.addCallback(lambda _: self.store.add_server_channel(record)).addCallback(stored)

    def _broadcast_contract(self, tx: bytes, contract_txid: bytes) -> defer.Deferred[None]:
        def rejected(f: Failure) -> Failure | defer.Deferred[None]:
            kind, why = refusal(f.value)
            channel = self._channels.get(contract_txid)
            if kind is RejectKind.UNREACHABLE:
                # The server's outage, not the contract's fault: kept OPEN, offered again.
                self.log.warn("channel {txid} (peer {peer}): the node is unavailable ({why}); the contract stays "
                              "pending and is broadcast again until the node answers", txid=display_hex(contract_txid),
                              peer=self._peer(contract_txid), why=why)
                if channel is not None:
                    channel.feed(lc.ContractUnsent(why))
                return f
            self.log.warn("channel {txid} (peer {peer}): contract rejected: {why}", txid=display_hex(contract_txid),
                          peer=self._peer(contract_txid), why=why)
            if channel is None:
                return f
            channel.feed(lc.ContractRejected(why))
            # The channel is marked CONTRACT_FAILED before the client hears of it.
            return channel.idle().addCallback(lambda _: f)

        d: defer.Deferred[bytes] = self.chain.broadcast(tx)
        return d.addCallbacks(lambda _: None, rejected)

    def _store_payment(self, connection: ServerChannel, contract_txid: bytes, best_value: int,
                       signature: bytes) -> defer.Deferred[None]:
        channel = self._channels.get(contract_txid)
        if channel is not None and connection in channel.probation:
            # The connection's machine has checked the client's signature: its proof.
            return defer.ensureDeferred(self._take_over(channel, connection, best_value, signature))
        if channel is None or channel.connection is not connection:
            return defer.fail(ChannelNotOpen(contract_txid, "taken over by another connection"))
        return self._record_payment(channel, best_value, signature)

    def _record_payment(self, channel: _Channel, best_value: int, signature: bytes) -> defer.Deferred[None]:
        assert channel.connection is not None, "a payment comes from the attached connection"
        d = self.ownership.record_payment(channel.txid, channel.connection, best_value, signature)
        if not d.called:  # a durable store: a takeover waits for it
            channel.writing += 1
            d.addBoth(channel.payment_written)
        return d

    async def _take_over(self, channel: _Channel, connection: ServerChannel, best_value: int,
                         signature: bytes) -> None:
        """A connection on probation sent a correctly signed payment: it takes the channel over
        if the payment does not go back on what is stored (see the module docstring)."""
        told = channel.probation[connection]
        while True:  # the holder may start another payment while the record is read
            await channel.payments_stored()
            record = await self.store.server_channel(channel.txid)
            if not channel.writing:
                break
        if connection not in channel.probation or connection.close_reason is not None:
            raise ChannelNotOpen(channel.txid, "this connection is closing")
        del channel.probation[connection]
        if record is None or record.state is not S.OPEN:
            raise ChannelNotOpen(channel.txid, record.state.value if record is not None else "not stored")
        if record.best_value != told or best_value < record.best_value:
            # The holder paid since this connection resumed: its view of b is stale (or its
            # payment goes back on a stored one). The holder keeps the channel.
            raise StoreError(f"the channel was paid to {record.best_value} on another connection since this one "
                             f"resumed at {told}; resume again")
        holder, channel.connection = channel.live(), connection
        if holder is not None and holder is not connection:
            self.log.info("channel {txid} (peer {peer}): taken over from {holder} by a resume that proved the "
                          "client key", txid=display_hex(channel.txid), peer=connection.peer or NO_PEER,
                          holder=holder.peer or NO_PEER)
            holder.close()
        await self._record_payment(channel, best_value, signature)

    def _settle_for_connection(self, connection: ServerChannel, contract_txid: bytes,
                               reason: CloseReason) -> defer.Deferred[bytes]:
        channel = self._channels.get(contract_txid)
        if channel is not None and connection in channel.probation:
            if channel.live() is not None:
                # A CLOSE on the newcomer's word would end the paying client's channel.
                return defer.fail(SettlementRejected("the channel is in use by another connection; "
                                                     "pay on this one first to take it over"))
            del channel.probation[connection]  # the holder is gone: nobody to protect
        return self._request_settlement(contract_txid, _SETTLE_BY.get(reason, lc.SettleBy.CLIENT))

    def _opened(self, connection: ServerChannel, contract_txid: bytes, resumed: bool) -> None:
        if self._subscribers:
            self._subscribers.notify(lc.ChannelEvent(lc.ChannelEventKind.OPENED, contract_txid, "resumed" if resumed else "new"))

    def _paid(self, contract_txid: bytes, increase: int, total: int) -> None:
        if self._subscribers:  # once per payment: nothing made when nobody listens
            self._subscribers.notify(lc.ChannelEvent(lc.ChannelEventKind.PAYMENT, contract_txid, increase=increase, total=total))

    def _closed(self, connection: ServerChannel, reason: CloseReason) -> None:
        if connection.machine.signer is not None:  # a kept key stays; an unused one goes
            self.wallet.forget_channel_key(connection.machine.signer.public_key)
        self.ownership.detached(connection)
        record = connection.machine.record  # stored (or resumed) by this connection, if it got that far
        txid = connection.contract_txid or (record.contract_txid if record is not None else None)
        channel = self._channels.get(txid) if txid is not None else None
        if channel is not None:
            if channel.connection is connection:
                channel.connection = None
            channel.probation.pop(connection, None)
            self._release_if_done(channel)
        if txid is not None and self._subscribers:
            self._subscribers.notify(lc.ChannelEvent(lc.ChannelEventKind.CLOSED, txid, reason.name))

    # -- carrying out lifecycle effects --------------------------------------------------------

    def _perform(self, channel: _Channel, effect: lc.LifecycleEffect) -> Optional[defer.Deferred[lc.LifecycleEvent]]:
        """Do one effect; a Deferred of the event that reports its outcome, if it has one."""
        if isinstance(effect, lc.PersistTransition):
            return self._persist(channel, effect)
        if isinstance(effect, lc.BuildSettlement):
            return self._build(channel, effect.rates)
        if isinstance(effect, lc.Broadcast):
            return self._broadcast(channel, effect)
        if isinstance(effect, lc.Rebroadcast):
            self._rebroadcast(channel, effect)
            return None
        if isinstance(effect, lc.QueryContractStatus):
            return self._query(channel)
        if isinstance(effect, lc.ArmTimer):
            self._arm(channel, effect)
            return None
        if isinstance(effect, lc.CancelTimer):
            call = channel.timers.pop(effect.kind, None)
            if call is not None and call.active():
                call.cancel()
            return None
        if isinstance(effect, lc.WatchOutpoints):
            self._watch(channel, effect)
            return None
        if isinstance(effect, lc.Unwatch):
            for watch in channel.watches.pop(effect.kind, []):
                watch.cancel()
            return None
        if isinstance(effect, lc.TellConnection):
            self._tell(channel, effect)
            return None
        if isinstance(effect, lc.SettleSucceeded):
            self._settle_succeeded(channel, effect)
            return None
        if isinstance(effect, lc.SettleFailed):
            self._settle_failed(channel, effect)
            return None
        if isinstance(effect, lc.NotifyApplication):
            self._log_event(effect.event)
            self._subscribers.notify(effect.event)
            return None
        assert_never(effect)

    def _lifecycle_failed(self, failure: Failure, channel: _Channel) -> None:
        self.log.failure("channel {txid} (peer {peer}): lifecycle effect failed", failure,
                         txid=display_hex(channel.txid), peer=self._peer(channel))

    def _persist(self, channel: _Channel, effect: lc.PersistTransition) -> defer.Deferred[lc.LifecycleEvent]:
        txid = channel.txid

        def stored(record: ServerChannelRecord) -> lc.LifecycleEvent:
            if effect.changes.get("settlement_tx") is not None:
                crash_point("settlement-stored")
            return lc.TransitionStored(record)

        def refused(f: Failure) -> defer.Deferred[lc.LifecycleEvent] | lc.LifecycleEvent:
            if isinstance(f.value, SettlementStoredElsewhere):
                def adopt(record: Optional[ServerChannelRecord]) -> lc.LifecycleEvent:
                    if record is None:
                        return lc.EffectFailed("the channel is no longer stored")
                    if record.state is not effect.new or record.settlement_tx is None:
                        return lc.TransitionConflict(record)
                    # Ours is never stored: carry on with the stored one, as if we had built it.
                    self.log.info("channel {txid} (peer {peer}): another node stored its settlement first; "
                                  "broadcasting that one", txid=display_hex(txid), peer=self._peer(channel))
                    return lc.TransitionStored(record)

                return self.store.server_channel(txid).addCallback(adopt)
            if isinstance(f.value, TransitionConflict):
                def again(record: Optional[ServerChannelRecord]) -> lc.LifecycleEvent:
                    if record is None:
                        return lc.EffectFailed("the channel is no longer stored")
                    return lc.TransitionConflict(record)

                return self.store.server_channel(txid).addCallback(again)
            self.log.failure("channel {txid} (peer {peer}): storing {old} -> {new} failed", f, txid=display_hex(txid),
                             peer=self._peer(channel), old=effect.expected.value, new=effect.new.value)
            return lc.EffectFailed(f.getErrorMessage())

        if effect.changes.get("settlement_tx") is not None:
            d = self.ownership.store_settlement(txid, effect.expected, effect.new, dict(effect.changes),
                                                channel.built_on)
        else:
            d = self.store.transition_server(txid, effect.expected, effect.new, **effect.changes)
        return d.addCallbacks(stored, refused)

    def _build(self, channel: _Channel, rates: tuple[int, ...]) -> defer.Deferred[lc.LifecycleEvent]:
        record = channel.machine.record
        channel.built_on = record.settlement_tx
        if ISettlementSigner.providedBy(self.wallet):  # the keys are elsewhere (wallet.remote)
            return self._build_remotely(channel, rates)

        def build(payout: bytes) -> lc.LifecycleEvent:
            script = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
            signer = self.wallet.signer_for(record.server_key)
            assert record.best_signature is not None
            cheapest: Optional[tuple[int, int]] = None  # (fee, rate) of the cheapest refusal
            for rate in rates:
                try:
                    settlement = build_settlement(script, record.contract_txid, record.value,
                                                  record.value - record.best_value, record.best_signature, signer,
                                                  payout, rate)
                except SettlementUnaffordable as e:
                    if cheapest is None or e.fee < cheapest[0]:
                        cheapest = (e.fee, rate)
                    continue
                if rate != self.policy.fee_rate:
                    self.log.info("channel {txid} (peer {peer}): settlement at {rate} sat/kB",
                                  txid=display_hex(channel.txid), peer=self._peer(channel), rate=rate)
                return lc.SettlementBuilt(settlement.raw, rate)
            return lc.SettlementUnaffordable(*cheapest) if cheapest is not None else lc.SettlementUnaffordable()

        def failed(f: Failure) -> lc.LifecycleEvent:
            self.log.failure("channel {txid} (peer {peer}): building the settlement failed", f,
                             txid=display_hex(channel.txid), peer=self._peer(channel))
            return lc.EffectFailed(f.getErrorMessage())

        # A payout script of its own per channel, stored by the wallet before it is returned.
        d: defer.Deferred[bytes] = defer.maybeDeferred(self.wallet.settlement_payout_script, channel.txid)
        built: defer.Deferred[lc.LifecycleEvent] = d.addCallback(build)
        return built.addErrback(failed)

    def _build_remotely(self, channel: _Channel, rates: tuple[int, ...]) -> defer.Deferred[lc.LifecycleEvent]:
        def signed(answer: SignedSettlement) -> lc.LifecycleEvent:
            if answer.tx:
                return lc.SettlementBuilt(answer.tx, answer.rate)
            return lc.SettlementUnaffordable(answer.fee, answer.rate if answer.fee is not None else None)

        def failed(f: Failure) -> lc.LifecycleEvent:
            if f.check(SignerUnavailable, Refused):
                self.log.warn("channel {txid} (peer {peer}): the signer did not sign the settlement: {why}; it is "
                              "tried again in {retry:g} s", txid=display_hex(channel.txid), peer=self._peer(channel),
                              why=f.getErrorMessage(), retry=self.policy.retry_interval)
            else:
                self.log.failure("channel {txid} (peer {peer}): building the settlement failed", f,
                                 txid=display_hex(channel.txid), peer=self._peer(channel))
            return lc.EffectFailed(f.getErrorMessage())

        d = ISettlementSigner(self.wallet).sign_settlement(channel.machine.record, rates)
        return d.addCallbacks(signed, failed)

    def _broadcast(self, channel: _Channel, effect: lc.Broadcast) -> defer.Deferred[lc.LifecycleEvent]:
        def accepted(_: object) -> lc.LifecycleEvent:
            if effect.what is lc.TxRole.SETTLEMENT:
                crash_point("settlement-broadcast")
            return lc.BroadcastAccepted(effect.what)

        def refused(f: Failure) -> lc.LifecycleEvent:
            kind, reason = refusal(f.value)
            if effect.what is lc.TxRole.CONTRACT:
                self.log.warn("channel {txid} (peer {peer}): contract not accepted again: {why}",
                              txid=display_hex(channel.txid), peer=self._peer(channel), why=reason)
            return lc.BroadcastRefused(effect.what, kind, reason)

        d: defer.Deferred[object] = defer.maybeDeferred(self.chain.broadcast, effect.tx)
        return d.addCallbacks(accepted, refused)

    def _rebroadcast(self, channel: _Channel, effect: lc.Rebroadcast) -> None:
        def refused(f: Failure) -> None:
            self.log.debug("channel {txid} (peer {peer}): {what} not taken again: {why}",
                           txid=display_hex(channel.txid), peer=self._peer(channel), what=effect.what.value,
                           why=f.getErrorMessage())

        defer.maybeDeferred(self.chain.broadcast, effect.tx).addCallbacks(lambda _: None, refused)

    def _query(self, channel: _Channel) -> defer.Deferred[lc.LifecycleEvent]:
        def known(status: TxStatus) -> lc.LifecycleEvent:
            return lc.ContractStatusKnown(status.state)

        def failed(f: Failure) -> lc.LifecycleEvent:
            self.log.failure("channel {txid} (peer {peer}): asking the chain about the contract failed", f,
                             txid=display_hex(channel.txid), peer=self._peer(channel))
            return lc.EffectFailed(f.getErrorMessage())

        return defer.maybeDeferred(self.chain.tx_status, channel.txid).addCallbacks(known, failed)

    def _arm(self, channel: _Channel, effect: lc.ArmTimer) -> None:
        old = channel.timers.pop(effect.kind, None)
        if old is not None and old.active():
            old.cancel()
        delay = max(0.0, effect.at - self.clock.seconds())
        channel.timers[effect.kind] = self.clock.callLater(delay, self._timer_fired, channel, effect.kind)

    def _timer_fired(self, channel: _Channel, kind: lc.TimerKind) -> None:
        channel.timers.pop(kind, None)
        if kind is lc.TimerKind.SETTLE:
            self.log.info("channel {txid} (peer {peer}): expiry {expiry} near, settling", txid=display_hex(channel.txid),
                          peer=self._peer(channel), expiry=iso_time(channel.machine.record.expiry))
        channel.feed(_TIMER_EVENTS[kind])

    def _watch(self, channel: _Channel, effect: lc.WatchOutpoints) -> None:
        if effect.kind is lc.WatchKind.INPUTS:
            def spent(event: SpendEvent) -> None:
                channel.feed(lc.ContractInputSpent(event.spending_txid, event.status.confirmations))
        else:
            def spent(event: SpendEvent) -> None:
                state = event.status.state
                if state is TxState.UNKNOWN and channel.output_spend in _SEEN_SPENT:
                    channel.rebroadcast.reset()  # the spend vanished: offer it at the next block
                channel.output_spend = state
                channel.feed(lc.ContractSpent(event.spending_tx, state is TxState.CONFIRMED))

        watches = channel.watches.setdefault(effect.kind, [])
        for point in effect.outpoints:
            watches.append(self.chain.watch_spend(point, spent))

    def _tell(self, channel: _Channel, effect: lc.TellConnection) -> None:
        for waiting in list(channel.probation):
            waiting.close()  # the channel is leaving OPEN: nothing to prove any more
        connection = channel.connection
        if connection is None or connection.close_reason is not None:
            return
        if effect.news is lc.ConnectionNews.CLOSE:
            connection.close()
        elif effect.settlement_tx is not None:
            connection.settled_elsewhere(effect.settlement_tx)

    def _settle_succeeded(self, channel: _Channel, effect: lc.SettleSucceeded) -> None:
        if effect.by and self._logged_settlements.get(channel.txid) != effect.tx:  # one line per settlement
            self._logged_settlements[channel.txid] = effect.tx
            self.log.info("channel {txid} (peer {peer}): settlement broadcast ({by}), server gets {b} sat before fees",
                          txid=display_hex(channel.txid), peer=self._peer(channel),
                          by=", ".join(sorted(b.value for b in effect.by)), b=channel.machine.record.best_value)
            if self.observer is not None:
                self.observer.settlement_broadcast(channel.txid)
        waiting, channel.waiters = channel.waiters, []
        for waiter in waiting:
            waiter.callback(effect.tx)

    def _settle_failed(self, channel: _Channel, effect: lc.SettleFailed) -> None:
        self.log.warn("channel {txid} (peer {peer}): not settled: {why}", txid=display_hex(channel.txid),
                      peer=self._peer(channel), why=effect.why)
        waiting, channel.waiters = channel.waiters, []
        for waiter in waiting:
            error: Exception = (SettlementUnaffordable(channel.machine.record.best_value, effect.fee or 0, effect.why)
                                if effect.unaffordable else SettlementRejected(effect.why))
            waiter.errback(error)

    def _log_event(self, event: lc.ChannelEvent) -> None:
        txid = display_hex(event.contract_txid)
        peer = self._peer(event.contract_txid)
        kind = event.kind
        if kind is lc.ChannelEventKind.STUCK:
            self.log.warn("channel {txid} (peer {peer}): stuck: {note}", txid=txid, peer=peer, note=event.note)
        elif kind is lc.ChannelEventKind.CONTRACT_FAILED:
            self.log.warn("channel {txid} (peer {peer}): {note}; no more payments accepted", txid=txid, peer=peer,
                          note=event.note)
        elif kind in (lc.ChannelEventKind.SETTLED, lc.ChannelEventKind.REFUNDED):
            self.log.info("channel {txid} (peer {peer}): {state} on chain{note}", txid=txid, peer=peer,
                          state=kind.value, note=f": {event.note}" if event.note else "")
        elif kind is lc.ChannelEventKind.CONTRACT_SPENT:
            self.log.warn("channel {txid} (peer {peer}): {note}", txid=txid, peer=peer, note=event.note)
        else:
            self.log.info("channel {txid} (peer {peer}): {state}", txid=txid, peer=peer, state=kind.value)

    def _peer(self, channel: "_Channel | bytes | None") -> str:
        """The address of the client attached to a channel, for its log lines."""
        if isinstance(channel, bytes):
            channel = self._channels.get(channel)
        connection = channel.connection if channel is not None else None
        return (connection.peer or NO_PEER) if connection is not None else NO_PEER
