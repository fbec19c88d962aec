"""
The client's channels as a whole, after and between connections: the client always gets its
money back (PROTOCOL.md §10.3, §11.1, with the specification's recommendations).

For every stored channel that is not finished:

- the contract output is watched: a spend that is not our refund is the server's settlement,
  recorded as such (this is also how a client learns of a settlement a stock bitcoinj server
  never sent, §1.4);
- from ``expiry + 300`` on, the contract (in case the server never broadcast it) and the refund
  are broadcast, and the refund is broadcast again on every new block until it is accepted (a
  refund is non-final until the median time past passes its lock time, BIP 113, which lags the
  wall clock by about an hour); the record is kept until the refund or a settlement confirms.

Timers and retries run on the injected clock; a failing attempt is logged and retried, never
lost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_paychan import constants as C
from twisted_paychan.channel.validation import settlement_pays_change
from twisted_paychan.chain.types import BroadcastRejected, OutPoint, SpendEvent, TxState, display_hex
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState

_FINISHED = (ClientChannelState.SETTLED, ClientChannelState.REFUNDED)


class ClientChannels:
    log = Logger()

    def __init__(self, chain: Any, store: Any, clock: IReactorTime) -> None:
        self.chain = chain
        self.store = store
        self.clock = clock
        self._timers: dict[bytes, Any] = {}
        self._spend_watches: dict[bytes, Any] = {}
        self._block_watch: Any = None
        #: Channels whose refund is due and not yet accepted: retried on every block.
        self._due: set[bytes] = set()

    def start(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        self._block_watch = self.chain.watch_blocks(self._new_block)
        for record in await self.store.client_channels():
            if record.state is ClientChannelState.OPEN:
                try:  # the node may have lost its mempool in a crash; the contract is ours too
                    await self.chain.broadcast(record.contract)
                except Exception as e:
                    self.log.debug("channel {txid}: contract rebroadcast refused: {why}",
                                   txid=display_hex(record.contract_txid), why=e)
            self.track(record)

    def stop(self) -> None:
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        for watch in self._spend_watches.values():
            watch.cancel()
        self._spend_watches.clear()
        if self._block_watch is not None:
            self._block_watch.cancel()
            self._block_watch = None

    def refund_due_at(self, record: ClientChannelRecord) -> int:
        return record.expiry + C.CLIENT_REFUND_DELAY

    def track(self, record: ClientChannelRecord) -> None:
        """Follow a stored channel (new ones as soon as they are stored)."""
        txid = record.contract_txid
        if record.state in _FINISHED:
            return
        if txid not in self._spend_watches:
            self._spend_watches[txid] = self.chain.watch_spend(
                OutPoint(txid, 0), lambda event, txid=txid: self._contract_spent(txid, event)
            )
        if txid not in self._timers and txid not in self._due:
            delay = max(0.0, self.refund_due_at(record) - self.clock.seconds())
            self._timers[txid] = self.clock.callLater(delay, self._refund_due, txid)

    # -- refunds ------------------------------------------------------------------------------

    def _refund_due(self, contract_txid: bytes) -> None:
        self._timers.pop(contract_txid, None)
        self._due.add(contract_txid)
        self._attempt(contract_txid)

    def _new_block(self, tip: Any) -> None:
        for txid in list(self._due):
            self._attempt(txid)

    def _attempt(self, contract_txid: bytes) -> None:
        d = defer.ensureDeferred(self._broadcast_refund(contract_txid))
        d.addErrback(lambda f: self.log.failure("channel {txid}: refund attempt failed; will retry",
                                                f, txid=display_hex(contract_txid)))

    async def _broadcast_refund(self, contract_txid: bytes) -> None:
        record = await self.store.client_channel(contract_txid)
        if record is None or record.state in _FINISHED:
            self._due.discard(contract_txid)
            return
        if record.state is not ClientChannelState.EXPIRING:
            record = replace(record, state=ClientChannelState.EXPIRING, updated_at=int(self.clock.seconds()))
            await self.store.update_client_channel(record)
        status = await self.chain.tx_status(contract_txid)
        if status.state is TxState.UNKNOWN:
            try:
                await self.chain.broadcast(record.contract)  # the server may never have
            except BroadcastRejected as e:
                self.log.warn("channel {txid}: contract not accepted: {why}", txid=display_hex(contract_txid),
                              why=e.reason)
                return
        try:
            await self.chain.broadcast(record.refund)
        except BroadcastRejected as e:
            # Usually non-final: the median time past has not reached the lock time yet.
            self.log.info("channel {txid}: refund not accepted yet ({why}); retrying each block",
                          txid=display_hex(contract_txid), why=e.reason)
            return
        self.log.info("channel {txid}: refund broadcast", txid=display_hex(contract_txid))

    # -- outcomes -----------------------------------------------------------------------------

    def _contract_spent(self, contract_txid: bytes, event: SpendEvent) -> None:
        d = defer.ensureDeferred(self._record_spend(contract_txid, event))
        d.addErrback(lambda f: self.log.failure("recording a contract spend failed", f))

    async def _record_spend(self, contract_txid: bytes, event: SpendEvent) -> None:
        record = await self.store.client_channel(contract_txid)
        confirmed = event.status.state is TxState.CONFIRMED
        if record is None:
            return
        refund = event.spending_tx == record.refund
        if refund and not confirmed:
            return  # our refund is in the mempool: wait for it to confirm
        state = ClientChannelState.REFUNDED if refund else ClientChannelState.SETTLED
        note = "" if refund else settlement_note(event.spending_tx, record)
        if record.state is not state or record.close_tx != event.spending_tx:
            await self.store.update_client_channel(
                replace(record, state=state, close_tx=event.spending_tx, note=note,
                        updated_at=int(self.clock.seconds()))
            )
            if note:
                self.log.warn("channel {txid}: {note}", txid=display_hex(contract_txid), note=note)
            self.log.info("channel {txid}: {state}", txid=display_hex(contract_txid), state=state.value)
        self._due.discard(contract_txid)
        timer = self._timers.pop(contract_txid, None)
        if timer is not None and timer.active():
            timer.cancel()
        if confirmed:
            watch = self._spend_watches.pop(contract_txid, None)
            if watch is not None:
                watch.cancel()


async def release_abandoned_contracts(wallet: Any, store: Any, chain: Any) -> list[bytes]:
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


def settlement_note(spending_tx: bytes, record: ClientChannelRecord) -> str:
    """Empty when the settlement pays our change; otherwise what is wrong, for the record."""
    if settlement_pays_change(spending_tx, record.client_key, record.client_change):
        return ""
    return f"the transaction that closed the channel does not pay our change of {record.client_change} sat"
