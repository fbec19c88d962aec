"""
The transaction feed: what a chain hands a listener that follows it block by block (issue #21).

A wallet that asked for every unspent output of every script on every block paid, per block,
for its whole history (and, on Bitcoin Core, one ``scantxoutset`` of the whole UTXO set per
script). Instead it scans once (:meth:`IChain.scan_outputs`) and then follows
:meth:`IChain.watch_transactions`: each block connected to the best chain, with its
transactions; each block disconnected by a reorganisation; each transaction entering or leaving
the mempool. A listener's work per event follows the event, not what it has seen before.

Events, in the order they happened:

* :class:`BlockConnected` ``(height, block_hash, txs)``: the block at ``height`` joined the
  best chain; ``txs`` in block order, the coinbase first. A transaction mined in it leaves the
  mempool silently.
* :class:`BlockDisconnected` ``(height, block_hash)``: the best chain's block at ``height`` left
  it (the tip first). Its transactions may come back as :class:`MempoolAdded`.
* :class:`MempoolAdded` ``(txs)``: transactions accepted into the mempool, parents before
  children, or the whole mempool once when a watch starts.
* :class:`MempoolRemoved` ``(txids)``: transactions that left the mempool *without* being mined
  (replaced, conflicted by a block, dropped after a reorg). A listener ignores txids it does not
  hold.
* :class:`FeedGap`: the chain could not bring the listener from where it said it was
  (``since``) to the tip (a reorganisation deeper than the blocks it remembers): it must scan
  again. The watch goes on from the tip.

``watch_transactions(callback, since)`` starts after ``since``, a *locator*: blocks the listener
holds, newest first. The chain finds the newest one still on its best chain, disconnects the
listener's blocks above it and connects its own up to the tip; then hands over the mempool.
Without ``since`` it starts at the tip. Every listener has its own queue: events are delivered
later on the reactor, never from inside the call that caused them, and
:meth:`ITransactionWatch.sync` delivers what is due now (the RPC chain polls first).

:class:`FeedHub` is that queue for the chains that learn of every change as it happens (the
memory chain and the embedded node).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_paychan.chain.interfaces import ITransactionWatch
from twisted_paychan.chain.types import BlockId, OutPoint

log = Logger()


@dataclass(frozen=True, slots=True)
class FeedTx:
    """What a follower needs of a transaction: what it spends and what it pays."""

    txid: bytes
    #: The outpoints it spends; empty for a coinbase.
    inputs: tuple[OutPoint, ...]
    #: ``(value, script_pubkey)`` of each output, by index.
    outputs: tuple[tuple[int, bytes], ...]
    coinbase: bool = False


@dataclass(frozen=True)
class BlockConnected:
    height: int
    block_hash: bytes
    txs: Sequence[FeedTx]

    @property
    def block(self) -> BlockId:
        return BlockId(self.height, self.block_hash)


@dataclass(frozen=True)
class BlockDisconnected:
    height: int
    block_hash: bytes


@dataclass(frozen=True)
class MempoolAdded:
    txs: Sequence[FeedTx]


@dataclass(frozen=True)
class MempoolRemoved:
    txids: Sequence[bytes]


@dataclass(frozen=True)
class FeedGap:
    """The listener's ``since`` could not be joined to the best chain: scan again."""

    tip: BlockId


ChainEvent = Union[BlockConnected, BlockDisconnected, MempoolAdded, MempoolRemoved, FeedGap]


def feed_tx(txid: bytes, tx: Any) -> FeedTx:
    """A python-bitcoinlib ``CTransaction`` as a :class:`FeedTx`."""
    coinbase = bool(tx.is_coinbase())
    inputs = () if coinbase else tuple(OutPoint(bytes(i.prevout.hash), i.prevout.n) for i in tx.vin)
    return FeedTx(txid, inputs, tuple((o.nValue, bytes(o.scriptPubKey)) for o in tx.vout), coinbase)


@implementer(ITransactionWatch)
class FeedWatch:
    """One listener's queue."""

    def __init__(self, hub: "FeedHub", callback: Callable[[ChainEvent], Any]) -> None:
        self._hub = hub
        self.callback = callback
        self.cancelled = False
        self._queue: deque[ChainEvent] = deque()
        self._call: Optional[IDelayedCall] = None

    def push(self, events: Sequence[ChainEvent]) -> None:
        self._queue.extend(events)
        if self._queue and self._call is None and not self.cancelled:
            self._call = self._hub.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        self.deliver()

    def deliver(self) -> None:
        """Hand over everything queued, in order (including what the callback queues)."""
        while self._queue and not self.cancelled:
            event = self._queue.popleft()
            try:
                self.callback(event)
            except Exception:
                log.failure("transaction feed callback {callback!r} raised", callback=self.callback)

    def sync(self) -> "Deferred[None]":
        self.deliver()
        return succeed(None)

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._queue.clear()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
            self._hub.forget(self)


class FeedHub:
    """The feed watches of a chain that sees every change as it happens. ``catch_up(since)``
    answers the events that bring a new watch from ``since`` to now (see the module
    docstring); :meth:`publish` hands new events to every watch."""

    def __init__(self, reactor: IReactorTime, catch_up: Callable[[Sequence[BlockId]], list[ChainEvent]]) -> None:
        self.reactor = reactor
        self._catch_up = catch_up
        self._watches: dict[FeedWatch, None] = {}

    def watch(self, callback: Callable[[ChainEvent], Any], since: Sequence[BlockId] = ()) -> FeedWatch:
        watch = FeedWatch(self, callback)
        self._watches[watch] = None
        watch.push(self._catch_up(since))
        return watch

    def forget(self, watch: FeedWatch) -> None:
        self._watches.pop(watch, None)

    def __bool__(self) -> bool:
        return bool(self._watches)

    def publish(self, events: Sequence[ChainEvent]) -> None:
        if events:
            for watch in list(self._watches):
                watch.push(events)


def catch_up_events(
    since: Sequence[BlockId],
    tip_height: int,
    hash_at: Callable[[int], Optional[bytes]],
    block_at: Callable[[int], BlockConnected],
    mempool: Sequence[FeedTx],
) -> list[ChainEvent]:
    """The events that bring a listener from ``since`` (newest first) to a chain whose best
    block at each height is ``hash_at(height)`` (None above the tip), then the mempool; for
    chains that can read any block of their best chain at once."""
    events: list[ChainEvent] = []
    if since:
        joined = next((b for b in since if hash_at(b.height) == b.block_hash), None)
        if joined is None:
            tip_hash = hash_at(tip_height)
            assert tip_hash is not None
            events.append(FeedGap(BlockId(tip_height, tip_hash)))
        else:
            events.extend(BlockDisconnected(b.height, b.block_hash) for b in since if b.height > joined.height)
            events.extend(block_at(h) for h in range(joined.height + 1, tip_height + 1))
    if mempool:
        events.append(MempoolAdded(list(mempool)))
    return events
