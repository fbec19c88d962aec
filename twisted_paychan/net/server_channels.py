"""
The server's channels as a whole: which connection each stored channel is attached to, and
the settlement procedure (PROTOCOL.md §8.2) shared by client-requested closes, exhaustion, and
the expiry timers, and (later) the operator's ``paychan settle``.

Settlement follows the specification's recommendations rather than bitcoinj: the record is
never forgotten. The settlement is stored before it is broadcast; a settlement whose fee ``b``
cannot pay, or whose broadcast fails, leaves the channel ``STUCK`` with a note saying why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.settlement import SettlementRejected, SettlementUnaffordable, build_settlement
from twisted_paychan.bitcoin.transactions import parse_transaction
from twisted_paychan.chain.types import OutPoint, TxState, display_hex
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ServerSettings
from twisted_paychan.constants import FEE_RATE_FLOOR
from twisted_paychan.faults import crash_point
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState


class ServerChannels:
    log = Logger()

    def __init__(self, wallet: Any, chain: Any, store: Any, settings: ServerSettings, clock: IReactorTime) -> None:
        self.wallet = wallet
        self.chain = chain
        self.store = store
        self.settings = settings
        self.clock = clock
        self._attached: dict[bytes, Any] = {}
        self._timers: dict[bytes, Any] = {}
        self._watches: dict[bytes, Any] = {}
        self._input_watches: dict[bytes, list] = {}
        self._confirm_timers: dict[bytes, Any] = {}
        #: Settlements the node refused as too cheap: how many times to double the fee rate.
        self._fee_bumps: dict[bytes, int] = {}
        self._block_watch: Any = None

    # -- connections --------------------------------------------------------------------------

    async def _attach(self, contract_txid: bytes, connection: Any) -> Optional[ServerChannelRecord]:
        record = await self.store.server_channel(contract_txid)
        if record is None or record.state is not ServerChannelState.OPEN:
            return record
        other = self._attached.get(contract_txid)
        if other is not None and other is not connection:
            # bitcoinj: the resuming connection takes the channel over (§9.2 step 3.1).
            other.close()
        self._attached[contract_txid] = connection
        return record

    def attach(self, contract_txid: bytes, connection: Any) -> defer.Deferred[Optional[ServerChannelRecord]]:
        """The stored channel a connection wants to resume, now attached to it (or None)."""
        return defer.ensureDeferred(self._attach(contract_txid, connection))

    def add_channel(self, record: ServerChannelRecord, connection: Any) -> defer.Deferred[None]:
        """Store a new channel (durably) and attach it to the connection that opened it."""
        d = self.store.add_server_channel(record)

        def stored(_: None) -> None:
            self.log.info("channel {txid}: stored, value {value}, expires {expiry}",
                          txid=display_hex(record.contract_txid), value=record.value, expiry=record.expiry)
            if connection is not None and connection.close_reason is None:
                self._attached[record.contract_txid] = connection
            self._arm(record)

        return d.addCallback(stored)

    def contract_rejected(self, contract_txid: bytes, why: str) -> defer.Deferred[None]:
        """The node refused a contract whose channel is already stored: it takes no payments."""
        for timers in (self._timers, self._confirm_timers):
            call = timers.pop(contract_txid, None)
            if call is not None and call.active():
                call.cancel()
        self.log.warn("channel {txid}: contract rejected: {why}", txid=display_hex(contract_txid), why=why)
        return self.store.set_server_state(contract_txid, ServerChannelState.CONTRACT_FAILED,
                                           f"contract rejected by the node: {why}")

    def detach(self, connection: Any) -> None:
        for txid, attached in list(self._attached.items()):
            if attached is connection:
                del self._attached[txid]

    def attached(self, contract_txid: bytes) -> Any:
        return self._attached.get(contract_txid)

    # -- settlement ---------------------------------------------------------------------------

    def settle_now(self, contract_txid: bytes) -> defer.Deferred[bytes]:
        """Settle on the operator's request, whether or not a client is connected; a connected
        client gets CLOSE with the settlement."""
        connection = self._attached.get(contract_txid)
        d = self.settle(contract_txid, CloseReason.SERVER_REQUESTED_CLOSE)

        def tell_client(raw: bytes) -> bytes:
            if connection is not None and connection.close_reason is None:
                connection.settled_by_server(raw)
            return raw

        return d.addCallback(tell_client)

    def settle(self, contract_txid: bytes, reason: CloseReason) -> defer.Deferred[bytes]:
        """Build, store and broadcast the settlement; fires with the raw settlement."""
        return defer.ensureDeferred(self._settle(contract_txid, reason))

    async def _settle(self, contract_txid: bytes, reason: CloseReason) -> bytes:
        record = await self.store.server_channel(contract_txid)
        if record is None:
            raise KeyError(f"no stored channel {display_hex(contract_txid)}")
        if record.best_signature is None:
            raise SettlementUnaffordable(0, 0)  # nothing was ever paid: nothing to settle
        now = int(self.clock.seconds())
        if record.state is ServerChannelState.OPEN:
            # Freeze first: payments queued before this are in the record read next, payments
            # after it are refused, so the settlement pays the server every acknowledged payment.
            await self.store.set_server_state(contract_txid, ServerChannelState.SETTLING, "settling")
            record = await self.store.server_channel(contract_txid)
            assert record is not None
        bumps = self._fee_bumps.get(contract_txid, 0)
        if record.settlement_tx is None or bumps:
            # The floor rate is a last resort for the server's own settlements (expiry, operator),
            # where otherwise the client's refund takes everything; a client's CLOSE gets the
            # configured policy (BAD_TRANSACTION when b cannot pay it, §8.2 step 8).
            settlement = await self._build(record, bumps, floor=reason is CloseReason.SERVER_REQUESTED_CLOSE)
            if settlement is None:
                if record.settlement_tx is None:
                    await self._stuck(record, "settlement fee exceeds what the channel pays the server, "
                                              "even at the minimum fee rate", now)
                    raise SettlementUnaffordable(record.best_value, 0)
            else:
                record = replace(record, state=ServerChannelState.SETTLING, settlement_tx=settlement.raw, note="",
                                 updated_at=now)
                await self.store.update_server_channel(record)  # stored before it is broadcast
            crash_point("settlement-stored")
        assert record.settlement_tx is not None
        await self._ensure_contract_known(record)
        try:
            await self.chain.broadcast(record.settlement_tx)
        except Exception as e:
            if "fee" in str(e):
                # Too cheap for the node: the next attempt pays twice the rate (while b can).
                self._fee_bumps[contract_txid] = bumps + 1
            await self._stuck(record, f"settlement broadcast rejected: {e}", now, keep_tx=True)
            raise SettlementRejected(str(e)) from e
        self._fee_bumps.pop(contract_txid, None)
        crash_point("settlement-broadcast")
        if record.state is not ServerChannelState.SETTLING:
            record = replace(record, state=ServerChannelState.SETTLING, note="", updated_at=now)
            await self.store.update_server_channel(record)
        self.log.info("channel {txid}: settled ({reason}), server gets {b} before fees",
                      txid=display_hex(contract_txid), reason=reason.name, b=record.best_value)
        timer = self._timers.pop(contract_txid, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._watch_settlement(record)
        return record.settlement_tx

    async def _build(self, record: ServerChannelRecord, bumps: int, floor: bool) -> Optional[Any]:
        """The settlement at the configured rate doubled ``bumps`` times; when b cannot pay that:
        the previous rate's (None, keep what is stored) after a bump, or (``floor``) the 1000
        sat/kB floor for a first settlement, so the server gets what it can before the client's
        refund."""
        channel = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
        signer = self.wallet.signer_for(record.server_key)
        payout = await self.wallet.payout_script()
        rates = [self.settings.effective_fee_rate * 2**bumps]
        if floor and not bumps and rates[0] > FEE_RATE_FLOOR:
            rates.append(FEE_RATE_FLOOR)
        assert record.best_signature is not None
        for rate in rates:
            try:
                settlement = build_settlement(
                    channel, record.contract_txid, record.value, record.value - record.best_value,
                    record.best_signature, signer, payout, rate,
                )
            except SettlementUnaffordable:
                continue
            if rate != self.settings.effective_fee_rate:
                self.log.info("channel {txid}: settlement at {rate} sat/kB", txid=display_hex(record.contract_txid),
                              rate=rate)
            return settlement
        return None

    async def _ensure_contract_known(self, record: ServerChannelRecord) -> None:
        """The settlement spends the contract: if the node has forgotten an unconfirmed contract
        (its mempool is not kept across restarts), give it back first."""
        status = await self.chain.tx_status(record.contract_txid)
        if status.state is TxState.UNKNOWN:
            try:
                await self.chain.broadcast(record.contract)
            except Exception as e:
                self.log.warn("channel {txid}: contract not accepted again: {why}",
                              txid=display_hex(record.contract_txid), why=e)

    async def _stuck(self, record: ServerChannelRecord, note: str, now: int, keep_tx: bool = False) -> None:
        self.log.warn("channel {txid}: stuck: {note}", txid=display_hex(record.contract_txid), note=note)
        stuck = replace(record, state=ServerChannelState.STUCK, note=note, updated_at=now,
                        settlement_tx=record.settlement_tx if keep_tx else None)
        await self.store.update_server_channel(stuck)

    # -- expiry: settle before the client's refund becomes valid (§10.2) ----------------------

    #: Seconds between retries of a settlement that failed (fee, broadcast).
    retry_interval = 600.0

    def start(self) -> defer.Deferred[None]:
        """Arm a timer for every stored channel that is not finished; ones already past their
        moment fire at once. Settlements in flight are watched until they confirm."""
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        if self._block_watch is None:
            self._block_watch = self.chain.watch_blocks(self._new_block)
        for record in await self.store.server_channels():
            await self._rebroadcast(record)
            self._arm(record)

    async def _rebroadcast(self, record: ServerChannelRecord) -> None:
        """A node loses its mempool in a crash (ours, or bitcoind's without a clean shutdown):
        put back what this channel depends on, the contract and any settlement in flight."""
        wanted = []
        if record.state in (ServerChannelState.OPEN, ServerChannelState.SETTLING, ServerChannelState.STUCK):
            wanted.append(record.contract)
        if record.state is ServerChannelState.SETTLING and record.settlement_tx is not None:
            wanted.append(record.settlement_tx)
        for tx in wanted:
            try:
                await self.chain.broadcast(tx)
            except Exception as e:
                self.log.debug("channel {txid}: rebroadcast refused: {why}", txid=display_hex(record.contract_txid), why=e)

    def stop(self) -> None:
        if self._block_watch is not None:
            self._block_watch.cancel()
            self._block_watch = None
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
        for watches in self._input_watches.values():
            for w in watches:
                w.cancel()
        self._input_watches.clear()
        for call in self._confirm_timers.values():
            if call.active():
                call.cancel()
        self._confirm_timers.clear()

    def settle_at(self, record: ServerChannelRecord) -> int:
        return record.expiry - self.settings.settle_offset

    def _arm(self, record: ServerChannelRecord, delay: Optional[float] = None) -> None:
        txid = record.contract_txid
        if record.state in (ServerChannelState.SETTLED, ServerChannelState.REFUNDED,
                            ServerChannelState.CONTRACT_FAILED):
            return
        if record.state is ServerChannelState.OPEN:
            self._watch_contract_inputs(record)
            self._arm_confirmation_check(record)
        if record.state in (ServerChannelState.SETTLING, ServerChannelState.STUCK):
            # Follow the contract output: our settlement, or the client's refund, will spend it.
            self._watch_settlement(record)
        if record.state is ServerChannelState.SETTLING:
            return
        if delay is None:
            delay = max(0.0, self.settle_at(record) - self.clock.seconds())
        old = self._timers.get(txid)
        if old is not None and old.active():
            old.cancel()
        self._timers[txid] = self.clock.callLater(delay, self._expiry_fired, txid)

    def _expiry_fired(self, contract_txid: bytes) -> None:
        self._timers.pop(contract_txid, None)
        d = defer.ensureDeferred(self._settle_for_expiry(contract_txid))
        d.addErrback(self._expiry_failed, contract_txid)

    async def _settle_for_expiry(self, contract_txid: bytes) -> None:
        record = await self.store.server_channel(contract_txid)
        if record is None or record.state in (ServerChannelState.SETTLED, ServerChannelState.REFUNDED):
            return
        connection = self._attached.get(contract_txid)
        if connection is not None:
            connection.close()  # a connected client gets a plain CLOSE first (§10.2)
        self.log.info("channel {txid}: expiry near, settling", txid=display_hex(contract_txid))
        await self.settle(contract_txid, CloseReason.SERVER_REQUESTED_CLOSE)
        settled = await self.store.server_channel(contract_txid)
        if settled is not None:
            self._watch_settlement(settled)

    def _expiry_failed(self, failure: Any, contract_txid: bytes) -> None:
        watching = contract_txid in self._watches
        # Never lose the timer (a bitcoinj bug): log, and try again later.
        self.log.failure("channel {txid}: settlement before expiry failed; retrying in {delay} s",
                         failure, txid=display_hex(contract_txid), delay=self.retry_interval)
        self._timers[contract_txid] = self.clock.callLater(self.retry_interval, self._expiry_fired, contract_txid)
        if not watching:
            def watch(record: Optional[ServerChannelRecord]) -> None:
                if record is not None:
                    self._watch_settlement(record)

            d = self.store.server_channel(contract_txid)
            d.addCallback(watch)
            d.addErrback(lambda f: self.log.failure("watching a stuck channel failed", f))

    def _new_block(self, tip: Any) -> None:
        """Until a settlement confirms it is offered again with every block: a node may have
        dropped it from its mempool (restart, eviction) and nobody else will send it."""
        for txid in list(self._watches):
            d = defer.ensureDeferred(self._rebroadcast_settlement(txid))
            d.addErrback(lambda f: self.log.failure("rebroadcasting a settlement failed", f))

    async def _rebroadcast_settlement(self, contract_txid: bytes) -> None:
        record = await self.store.server_channel(contract_txid)
        if record is None or record.state is not ServerChannelState.SETTLING or record.settlement_tx is None:
            return
        try:
            await self.chain.broadcast(record.settlement_tx)
        except Exception as e:
            self.log.debug("channel {txid}: settlement not taken again: {why}", txid=display_hex(contract_txid), why=e)

    def _watch_settlement(self, record: ServerChannelRecord) -> None:
        """Follow the contract output until our settlement (or the client's refund) confirms."""
        txid = record.contract_txid
        if txid in self._watches:
            return

        def spent(event: Any) -> None:
            if event.status.state is not TxState.CONFIRMED:
                return
            watch = self._watches.pop(txid, None)
            if watch is not None:
                watch.cancel()
            d = defer.ensureDeferred(self._closed_on_chain(txid, event.spending_tx))
            d.addErrback(lambda f: self.log.failure("recording the settlement failed", f))

        self._watches[txid] = self.chain.watch_spend(OutPoint(txid, 0), spent)

    async def _closed_on_chain(self, contract_txid: bytes, spending_tx: bytes) -> None:
        record = await self.store.server_channel(contract_txid)
        if record is None:
            return
        ours = record.settlement_tx is not None and spending_tx == record.settlement_tx
        state = ServerChannelState.SETTLED if ours else ServerChannelState.REFUNDED
        note = "" if ours else "the contract was spent by another transaction (the client's refund?)"
        await self.store.update_server_channel(
            replace(record, state=state, note=note, updated_at=int(self.clock.seconds()))
        )
        timer = self._timers.pop(contract_txid, None)
        if timer is not None and timer.active():
            timer.cancel()
        self.log.info("channel {txid}: {state} on chain", txid=display_hex(contract_txid), state=state.value)

    # -- the contract itself: a double spend ends the channel (§7.3 check 5, §13 item 4) -------

    #: Confirmations after which a contract is taken as final and no longer watched.
    contract_final_depth = 6

    def _watch_contract_inputs(self, record: ServerChannelRecord) -> None:
        txid = record.contract_txid
        if txid in self._input_watches:
            return
        contract = parse_transaction(record.contract)
        watches = []

        def spent(event: Any) -> None:
            if event.spending_txid == txid:
                if event.status.confirmations >= self.contract_final_depth:
                    for w in self._input_watches.pop(txid, []):
                        w.cancel()
                return
            d = defer.ensureDeferred(self._contract_failed(txid, event))
            d.addErrback(lambda f: self.log.failure("recording a double-spent contract failed", f))

        for txin in contract.vin:
            point = OutPoint(bytes(txin.prevout.hash), txin.prevout.n)
            watches.append(self.chain.watch_spend(point, spent))
        self._input_watches[txid] = watches

    async def _contract_failed(self, contract_txid: bytes, event: Any) -> None:
        record = await self.store.server_channel(contract_txid)
        if record is None or record.state is not ServerChannelState.OPEN:
            return
        note = f"contract double-spent by {display_hex(event.spending_txid)}"
        await self.store.update_server_channel(
            replace(record, state=ServerChannelState.CONTRACT_FAILED, note=note, updated_at=int(self.clock.seconds()))
        )
        self.log.warn("channel {txid}: {note}; no more payments accepted", txid=display_hex(contract_txid), note=note)
        timer = self._timers.pop(contract_txid, None)
        if timer is not None and timer.active():
            timer.cancel()

    # -- a contract that never confirms (§13 item 4) ------------------------------------------

    #: Seconds a contract may stay unconfirmed before its channel stops taking payments.
    contract_confirm_timeout = 6 * 3600.0

    def _arm_confirmation_check(self, record: ServerChannelRecord) -> None:
        txid = record.contract_txid
        if txid in self._confirm_timers:
            return
        delay = max(0.0, record.created_at + self.contract_confirm_timeout - self.clock.seconds())
        self._confirm_timers[txid] = self.clock.callLater(delay, self._check_confirmation, txid)

    def _check_confirmation(self, contract_txid: bytes) -> None:
        self._confirm_timers.pop(contract_txid, None)
        d = defer.ensureDeferred(self._confirmation_due(contract_txid))
        d.addErrback(lambda f: self.log.failure("checking a contract's confirmation failed", f))

    async def _confirmation_due(self, contract_txid: bytes) -> None:
        record = await self.store.server_channel(contract_txid)
        if record is None or record.state is not ServerChannelState.OPEN:
            return
        status = await self.chain.tx_status(contract_txid)
        if status.state is TxState.CONFIRMED:
            return
        hours = self.contract_confirm_timeout / 3600
        note = (f"contract not confirmed after {hours:g} h "
                f"({'still in the mempool' if status.state is TxState.MEMPOOL else 'unknown to the node'})")
        await self.store.set_server_state(contract_txid, ServerChannelState.CONTRACT_FAILED, note)
        self.log.warn("channel {txid}: {note}; no more payments accepted", txid=display_hex(contract_txid), note=note)
