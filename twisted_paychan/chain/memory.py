"""
``MemoryChain``: the in-memory double of :class:`IChain`, for tests and embedding.

Plain dicts and no consensus engine for blocks: ``mine`` simply confirms the whole mempool.
What it does judge is a broadcast, exactly as the embedded node does (the shared
``chain.embedded.rules``: Bitcoin Core's script interpreter for every input, missing/spent
inputs, mempool conflicts, nLockTime finality against the next block's height and
median-time-past, coinbase maturity, fees), so a test that passes here fails for the same reason
on a real node. Every answer is an already-fired Deferred; notifications go through the
injected reactor (``callLater(0, ...)``) so they never re-enter the caller.

Test helpers: :meth:`MemoryChain.mine`, :meth:`MemoryChain.credit` and
:meth:`MemoryChain.reorg`. The transaction feed (``chain.feed``) hears each of them; a credit,
a coin from nowhere added to the tip block, arrives as that block connected again carrying just
the crediting transaction (a follower applies a block it already holds as more of its
transactions). Block timestamps come
from the reactor's clock, bumped to stay above the median-time-past as a real node's must.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Optional, Sequence

from bitcoin.core import COutPoint, CScript, CTransaction, CTxIn, CTxOut
from bitcoin.core.serialize import Hash as sha256d
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_paychan.bitcoin.transactions import weight
from twisted_paychan.chain.embedded import rules
from twisted_paychan.chain.embedded.mempool import Mempool, MempoolEntry
from twisted_paychan.chain.embedded.watchers import Watchers
from twisted_paychan.chain.feed import (
    BlockConnected,
    BlockDisconnected,
    ChainEvent,
    FeedHub,
    MempoolAdded,
    MempoolRemoved,
    catch_up_events,
    feed_tx,
)
from twisted_paychan.chain.interfaces import ICancellable, IChain, ITransactionWatch
from twisted_paychan.chain.types import (
    BlockId,
    BroadcastRejected,
    ChainTip,
    OutPoint,
    OutputScan,
    SpendEvent,
    TxState,
    TxStatus,
    Utxo,
)

log = Logger()


@dataclass
class _Block:
    block_hash: bytes
    height: int
    time: int
    txids: list[bytes] = field(default_factory=list)
    #: The coins its transactions spent, for ``reorg`` to give back.
    spent: list[Utxo] = field(default_factory=list)


@implementer(IChain)
class MemoryChain:
    """A chain in a few dicts. ``reactor`` supplies block timestamps and delivers notifications."""

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        genesis_time = int(reactor.seconds())
        self._blocks: list[_Block] = [_Block(sha256d(b"memory-chain genesis"), 0, genesis_time)]
        self._txs: dict[bytes, bytes] = {}  # txid -> raw, confirmed and mempool
        self._confirmed_at: dict[bytes, int] = {}  # txid -> height
        self._mempool = Mempool()
        self._utxos: dict[OutPoint, Utxo] = {}  # confirmed, unspent
        self._spent_by: dict[OutPoint, bytes] = {}  # confirmed spends
        self._credits = 0
        self._watchers = Watchers(reactor, self._spender_of, self._status, self._txs.get)
        self._feed = FeedHub(reactor, self._catch_up)
        self._reorgs = 0

    # -- IChain ----------------------------------------------------------------------------

    def broadcast(self, tx: bytes) -> "Deferred[bytes]":
        try:
            return succeed(self._accept(bytes(tx)))
        except BroadcastRejected as e:
            log.debug("memory chain rejected a transaction: {reason}", reason=e.reason)
            return fail(e)

    def tx_status(self, txid: bytes) -> "Deferred[TxStatus]":
        return succeed(self._status(txid))

    def get_transaction(self, txid: bytes) -> "Deferred[Optional[bytes]]":
        return succeed(self._txs.get(txid))

    def tip(self) -> "Deferred[ChainTip]":
        return succeed(self._tip())

    def unspent_outputs(self, script_pubkey: bytes) -> "Deferred[list[Utxo]]":
        script_pubkey = bytes(script_pubkey)
        found = [u for u in self._utxos.values() if u.script_pubkey == script_pubkey]
        found += self._mempool.outputs_paying(script_pubkey)
        return succeed(sorted((u for u in found if u.outpoint not in self._mempool.spends), key=lambda u: u.outpoint))

    def scan_outputs(self, scripts: Collection[bytes]) -> "Deferred[OutputScan]":
        wanted = {bytes(s) for s in scripts}
        found = sorted((u for u in self._utxos.values() if u.script_pubkey in wanted), key=lambda u: u.outpoint)
        top = self._blocks[-1]
        return succeed(OutputScan(found, BlockId(top.height, top.block_hash)))

    def watch_transactions(self, callback: Callable[[ChainEvent], Any], since: Sequence[BlockId] = ()) -> ITransactionWatch:
        return self._feed.watch(callback, since)

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        return self._watchers.watch_spend(outpoint, callback)

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._watchers.watch_blocks(callback)

    # -- test helpers ----------------------------------------------------------------------

    def mine(self, count: int = 1) -> list[bytes]:
        """Mine ``count`` blocks, the first confirming the whole mempool; their hashes."""
        hashes = [self._mine_block(self._mempool.clear()) for _ in range(count)]
        self._watchers.refresh()
        return hashes

    def _mine_block(self, entries: list[MempoolEntry], salt: bytes = b"") -> bytes:
        prev = self._blocks[-1]
        height = prev.height + 1
        block_time = max(int(self._reactor.seconds()), self._mtp() + 1)
        txids = [entry.txid for entry in entries]
        block_hash: bytes = sha256d(prev.block_hash + struct.pack("<II", height, block_time) + salt + b"".join(txids))
        block = _Block(block_hash, height, block_time, txids)
        self._blocks.append(block)
        for entry in entries:
            block.spent.extend(self._confirm(entry.txid, entry.tx, height))
        self._watchers.new_tip(self._tip())
        if self._feed:
            self._feed.publish([BlockConnected(height, block_hash, [feed_tx(e.txid, e.tx) for e in entries])])
        return block_hash

    def reorg(self, depth: int) -> list[bytes]:
        """Replace the top ``depth`` blocks with ``depth + 1`` empty ones; the transactions of
        the old blocks go back to the mempool when it takes them again (a credit's does not).
        The new blocks' hashes."""
        if not 0 < depth < len(self._blocks):
            raise ValueError(f"cannot reorganise {depth} blocks of {len(self._blocks)}")
        self._reorgs += 1
        events: list[ChainEvent] = []
        returning: list[bytes] = []
        for _ in range(depth):
            block = self._blocks.pop()
            for txid in reversed(block.txids):
                tx = CTransaction.deserialize(self._txs.pop(txid))
                for index in range(len(tx.vout)):
                    self._utxos.pop(OutPoint(txid, index), None)
                for txin in tx.vin:
                    self._spent_by.pop(OutPoint(bytes(txin.prevout.hash), txin.prevout.n), None)
                del self._confirmed_at[txid]
                returning.append(tx.serialize())
            for utxo in block.spent:
                self._utxos[utxo.outpoint] = utxo
            events.append(BlockDisconnected(block.height, block.block_hash))
        if self._feed:
            self._feed.publish(events)
        old = self._mempool.clear()
        hashes = [self._mine_block([], b"reorg %d" % self._reorgs) for _ in range(depth + 1)]
        before = {entry.txid for entry in old}
        for raw in [*reversed(returning), *(entry.raw for entry in old)]:
            try:
                self._accept(raw, publish=False)
            except BroadcastRejected:
                pass
        after = {entry.txid: entry for entry in self._mempool}
        if self._feed:
            removed = [t for t in before if t not in after]
            added = [feed_tx(t, e.tx) for t, e in after.items() if t not in before]
            self._feed.publish([MempoolRemoved(removed)] * bool(removed) + [MempoolAdded(added)] * bool(added))
        self._watchers.refresh()
        return hashes

    def credit(self, script_pubkey: bytes, value: int, coinbase: bool = False) -> OutPoint:
        """A confirmed coin from nowhere, in the tip block: spendable at once, or, as a
        ``coinbase``, once it has 100 confirmations (as a block reward is)."""
        self._credits += 1
        if coinbase:  # a null prevout; the scriptSig keeps each credit's txid its own
            vin = [CTxIn(COutPoint(), CScript(b"memory-chain coinbase %d" % self._credits), 0xFFFFFFFF)]
        else:
            vin = [CTxIn(COutPoint(sha256d(b"memory-chain credit %d" % self._credits), 0), CScript(), 0xFFFFFFFF)]
        ctx = CTransaction(vin, [CTxOut(value, CScript(bytes(script_pubkey)))])
        txid = ctx.GetTxid()
        self._blocks[-1].txids.append(txid)
        self._txs[txid] = ctx.serialize()
        self._confirmed_at[txid] = self._blocks[-1].height
        self._utxos[OutPoint(txid, 0)] = Utxo(OutPoint(txid, 0), value, bytes(script_pubkey), self._blocks[-1].height,
                                              coinbase=coinbase)
        if self._feed:
            top = self._blocks[-1]
            self._feed.publish([BlockConnected(top.height, top.block_hash, [feed_tx(txid, ctx)])])
        return OutPoint(txid, 0)

    @property
    def mempool(self) -> list[bytes]:
        """Txids waiting for a block, in the order they would be mined."""
        return [entry.txid for entry in self._mempool]

    # -- internals -------------------------------------------------------------------------

    def _accept(self, raw: bytes, publish: bool = True) -> bytes:
        tx = rules.parse_transaction(raw)
        txid: bytes = tx.GetTxid()
        if txid in self._txs:
            return txid
        fee = rules.check_acceptance(
            raw,
            tx,
            self._coin,
            self._mempool.spends.get,
            rules.NextBlock(self._blocks[-1].height + 1, self._mtp()),
            self._mtp_at,
        )
        self._mempool.add(MempoolEntry(txid, tx, raw, fee, weight(tx), self._reactor.seconds()))
        self._txs[txid] = raw
        if publish:
            self._watchers.refresh()
            if self._feed:
                self._feed.publish([MempoolAdded([feed_tx(txid, tx)])])
        return txid

    def _coin(self, outpoint: OutPoint) -> Optional[Utxo]:
        return self._utxos.get(outpoint) or self._mempool.coin(outpoint)

    def _confirm(self, txid: bytes, tx: CTransaction, height: int) -> list[Utxo]:
        """Confirm ``tx`` at ``height``; the coins it spent."""
        self._confirmed_at[txid] = height
        spent_coins = []
        for txin in tx.vin:
            spent = OutPoint(bytes(txin.prevout.hash), txin.prevout.n)
            coin = self._utxos.pop(spent, None)
            if coin is not None:
                spent_coins.append(coin)
            self._spent_by[spent] = txid
        for index, txout in enumerate(tx.vout):
            point = OutPoint(txid, index)
            self._utxos[point] = Utxo(point, txout.nValue, bytes(txout.scriptPubKey), height)
        return spent_coins

    def _catch_up(self, since: Sequence[BlockId]) -> list[ChainEvent]:
        def hash_at(height: int) -> Optional[bytes]:
            return self._blocks[height].block_hash if 0 <= height < len(self._blocks) else None

        def block_at(height: int) -> BlockConnected:
            block = self._blocks[height]
            txs = [feed_tx(t, CTransaction.deserialize(self._txs[t])) for t in block.txids]
            return BlockConnected(height, block.block_hash, txs)

        mempool = [feed_tx(entry.txid, entry.tx) for entry in self._mempool]
        return catch_up_events(since, self._blocks[-1].height, hash_at, block_at, mempool)

    def _spender_of(self, outpoint: OutPoint) -> Optional[bytes]:
        return self._spent_by.get(outpoint) or self._mempool.spends.get(outpoint)

    def _status(self, txid: bytes) -> TxStatus:
        if txid in self._mempool:
            return TxStatus(TxState.MEMPOOL)
        height = self._confirmed_at.get(txid)
        if height is None:
            return TxStatus(TxState.UNKNOWN)
        tip = self._blocks[-1].height
        return TxStatus(TxState.CONFIRMED, tip - height + 1, height, self._blocks[height].block_hash)

    def _mtp_at(self, height: int) -> int:
        return rules.median_time_past([b.time for b in self._blocks[max(0, height - 10) : height + 1]])

    def _mtp(self) -> int:
        return self._mtp_at(self._blocks[-1].height)

    def _tip(self) -> ChainTip:
        top = self._blocks[-1]
        return ChainTip(top.height, top.block_hash, top.time, self._mtp())
