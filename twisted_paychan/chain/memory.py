"""
``MemoryChain``: the in-memory double of :class:`IChain`, for tests and embedding.

Plain dicts and no consensus engine for blocks: ``mine`` simply confirms the whole mempool.
What it does judge is a broadcast, exactly as the embedded node does (the shared
``chain.embedded.rules``: Bitcoin Core's script interpreter for every input, missing/spent
inputs, mempool conflicts, nLockTime finality against the next block's height and
median-time-past, coinbase maturity, fees), so a test that passes here fails for the same reason
on a real node. Every answer is an already-fired Deferred; notifications go through the
injected reactor (``callLater(0, ...)``) so they never re-enter the caller.

Test helpers: :meth:`MemoryChain.mine` and :meth:`MemoryChain.credit`. Block timestamps come
from the reactor's clock, bumped to stay above the median-time-past as a real node's must.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

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
from twisted_paychan.chain.interfaces import ICancellable, IChain
from twisted_paychan.chain.types import (
    BroadcastRejected,
    ChainTip,
    OutPoint,
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

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        return self._watchers.watch_spend(outpoint, callback)

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._watchers.watch_blocks(callback)

    # -- test helpers ----------------------------------------------------------------------

    def mine(self, count: int = 1) -> list[bytes]:
        """Mine ``count`` blocks, the first confirming the whole mempool; their hashes."""
        hashes = []
        for _ in range(count):
            prev = self._blocks[-1]
            height = prev.height + 1
            block_time = max(int(self._reactor.seconds()), self._mtp() + 1)
            entries = self._mempool.clear()
            txids = [entry.txid for entry in entries]
            block_hash = sha256d(prev.block_hash + struct.pack("<II", height, block_time) + b"".join(txids))
            self._blocks.append(_Block(block_hash, height, block_time, txids))
            for entry in entries:
                self._confirm(entry.txid, entry.tx, height)
            hashes.append(block_hash)
            self._watchers.new_tip(self._tip())
        self._watchers.refresh()
        return hashes

    def credit(self, script_pubkey: bytes, value: int) -> OutPoint:
        """A confirmed coin from nowhere, in the tip block, spendable at once (not a coinbase)."""
        self._credits += 1
        source = COutPoint(sha256d(b"memory-chain credit %d" % self._credits), 0)
        ctx = CTransaction([CTxIn(source, CScript(), 0xFFFFFFFF)], [CTxOut(value, CScript(bytes(script_pubkey)))])
        txid = ctx.GetTxid()
        self._blocks[-1].txids.append(txid)
        self._txs[txid] = ctx.serialize()
        self._confirmed_at[txid] = self._blocks[-1].height
        self._utxos[OutPoint(txid, 0)] = Utxo(OutPoint(txid, 0), value, bytes(script_pubkey), self._blocks[-1].height)
        return OutPoint(txid, 0)

    @property
    def mempool(self) -> list[bytes]:
        """Txids waiting for a block, in the order they would be mined."""
        return [entry.txid for entry in self._mempool]

    # -- internals -------------------------------------------------------------------------

    def _accept(self, raw: bytes) -> bytes:
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
        self._watchers.refresh()
        return txid

    def _coin(self, outpoint: OutPoint) -> Optional[Utxo]:
        return self._utxos.get(outpoint) or self._mempool.coin(outpoint)

    def _confirm(self, txid: bytes, tx: CTransaction, height: int) -> None:
        self._confirmed_at[txid] = height
        for txin in tx.vin:
            spent = OutPoint(bytes(txin.prevout.hash), txin.prevout.n)
            self._utxos.pop(spent, None)
            self._spent_by[spent] = txid
        for index, txout in enumerate(tx.vout):
            point = OutPoint(txid, index)
            self._utxos[point] = Utxo(point, txout.nValue, bytes(txout.scriptPubKey), height)

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
