"""
``RegtestNode``: a regtest node in this process, on Bitcoin Core's consensus engine.

The kernel (``kernel``) validates and stores blocks; around it this module keeps the indexes
(``index``), a mempool judged by ``rules`` the way ``sendrawtransaction`` judges, and a miner
(``miner``) whose blocks take their timestamps from the injected clock. Everything runs on the
caller's thread, synchronously; listeners hear about new blocks and mempool changes right away
and are expected to defer their own work (``EmbeddedChain`` delivers through the reactor).

Time: a block's timestamp is the clock's ``seconds()``, raised to median-time-past + 1 when the
clock lags (a ``task.Clock`` at 0 yields consecutive seconds after the 2011 regtest genesis).
Tests move a lock time into the past by advancing the clock and mining 6 or more blocks, so
the median of the last 11 timestamps passes it. The kernel itself refuses a block more than
2 hours ahead of this machine's real clock (``time-too-new``); :class:`MiningFailed` says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_paychan.bitcoin.transactions import weight
from twisted_paychan.chain.embedded import miner, rules
from twisted_paychan.chain.embedded.datadir import DatadirLock
from twisted_paychan.chain.embedded.index import ChainIndex, ParsedBlock, parse_block
from twisted_paychan.chain.embedded.journal import BlockJournal
from twisted_paychan.chain.embedded.kernel import BlockVerdict, Kernel, SpentCoin
from twisted_paychan.chain.embedded.replacement import judge_replacement
from twisted_paychan.chain.feed import (
    BlockConnected,
    BlockDisconnected,
    ChainEvent,
    FeedHub,
    FeedTx,
    MempoolAdded,
    MempoolRemoved,
    feed_tx,
)
from twisted_paychan.constants import DEFAULT_MIN_RELAY_TX_FEE
from twisted_paychan.chain.embedded.mempool import Mempool, MempoolEntry, inputs_of
from twisted_paychan.chain.types import (
    BroadcastRejected,
    ChainTip,
    OutPoint,
    TxState,
    TxStatus,
    Utxo,
)

log = Logger()

#: The witness script ``OP_TRUE``: anyone can spend an output paying to it.
OP_TRUE_SCRIPT = b"\x51"
#: P2WSH of ``OP_TRUE``: a standard output anyone can spend with the witness ``[OP_TRUE]``.
#: The default coinbase payee, so tests can fund whatever they like from mined coins.
ANYONE_CAN_SPEND = b"\x00\x20" + hashlib.sha256(OP_TRUE_SCRIPT).digest()


#: How many raw blocks ``raw_transaction`` keeps after reading them back.
BLOCK_CACHE_SIZE = 4

#: The node's own record of its active chain (see ``journal``).
JOURNAL_FILE = "paychan-blocks.journal"
#: The UTXO set, spends and transaction locations (see ``index``), rebuilt at each open.
INDEX_FILE = "paychan-index.sqlite"


class MiningFailed(RuntimeError):
    """The kernel refused a block our miner built (``reason`` is Core's)."""

    def __init__(self, reason: str) -> None:
        hint = ""
        if reason == "time-too-new":
            hint = " (the clock is more than 2 hours ahead of this machine's real clock)"
        super().__init__(f"the kernel refused a mined block: {reason}{hint}")
        self.reason = reason


class RegtestNode:
    """A regtest node on ``datadir``, which it owns exclusively until :meth:`close`."""

    def __init__(
        self,
        datadir: Union[str, Path],
        reactor: IReactorTime,
        coinbase_script: bytes = ANYONE_CAN_SPEND,
    ) -> None:
        self.datadir = Path(datadir)
        self.reactor = reactor
        self.coinbase_script = bytes(coinbase_script)
        #: height -> raw block, the last few read back (``_recent_block``); emptied by a reorg.
        self._block_cache: dict[int, bytes] = {}
        self._mempool = Mempool()
        self._connected: list[ParsedBlock] = []
        #: The block being submitted, parsed (``submit_block``).
        self._submitted: Optional[ParsedBlock] = None
        #: Raw blocks connected since the journal was last written.
        self._connected_raw: list[bytes] = []
        self._disconnected: list[ParsedBlock] = []
        self._block_listeners: list[Callable[[ChainTip], Any]] = []
        self._change_listeners: list[Callable[[], Any]] = []
        self._touch_listeners: list[Callable[[list[OutPoint], bool], Any]] = []
        self._auto_mine: Optional[LoopingCall] = None
        #: The transaction feed's watches (``chain.feed``), set by EmbeddedChain; events are
        #: built only while one is watching.
        self.tx_feed: Optional[FeedHub] = None
        #: What the last ``_accept`` evicted (Core's full RBF), for the feed.
        self._evicted: list[bytes] = []
        self._lock = DatadirLock(self.datadir)
        try:
            self._index = ChainIndex(self.datadir / INDEX_FILE)
            self._kernel = Kernel(self.datadir, self._on_connected, self._on_disconnected)
            for height in range(self._kernel.height + 1):
                self._index.connect(parse_block(self._kernel.block_at(height)), height)
            self._connected.clear()
            self._connected_raw.clear()
            self._journal = BlockJournal(self.datadir / JOURNAL_FILE)
            self._replay_journal()
        except BaseException:
            self._lock.release()
            raise
        log.info("regtest node open on {datadir} at height {height}", datadir=str(self.datadir), height=self.height)

    def close(self) -> None:
        """Stop mining, flush and close the kernel, release the data directory."""
        self.stop_mining()
        self._journal.close()
        self._kernel.close()
        self._index.close()
        self._lock.release()

    # -- listeners -------------------------------------------------------------------------

    def on_block(self, callback: Callable[[ChainTip], Any]) -> None:
        """``callback(tip)`` for each block that becomes part of the best chain, in order."""
        self._block_listeners.append(callback)

    def on_change(self, callback: Callable[[], Any]) -> None:
        """``callback()`` after anything changed: a block, a reorg, a mempool acceptance."""
        self._change_listeners.append(callback)

    def on_touched(self, callback: Callable[[list[OutPoint], bool], Any]) -> None:
        """``callback(outpoints, seen_spends_changed)`` after a change: the outpoints it spent or
        unspent, and whether it may have changed spends already seen (a block or reorg, a
        mempool that lost a transaction). What spend watchers need to look at only what moved."""
        self._touch_listeners.append(callback)

    # -- chain state -----------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._index.height

    def tip(self) -> ChainTip:
        return self.tip_at(self.height)

    def tip_at(self, height: int) -> ChainTip:
        record = self._index.blocks[height]
        return ChainTip(height, record.block_hash, record.time, self._index.mtp_at(height))

    def median_time_past(self) -> int:
        return self._index.mtp_at(self.height)

    def block_hash_at(self, height: int) -> bytes:
        return self._index.blocks[height].block_hash

    def height_of(self, block_hash: bytes) -> Optional[int]:
        """Height of a block on the active chain, or None."""
        return self._index.height_of(block_hash)

    def header(self, block_hash: bytes) -> Optional[bytes]:
        height = self._index.height_of(block_hash)
        return None if height is None else self._index.blocks[height].header

    def block(self, block_hash: bytes) -> Optional[bytes]:
        """A raw block of the active chain, read back from the kernel's block files."""
        height = self._index.height_of(block_hash)
        return None if height is None else self._kernel.block_at(height)

    def block_at(self, height: int) -> bytes:
        return self._kernel.block_at(height)

    def tx_status(self, txid: bytes) -> TxStatus:
        if txid in self._mempool:
            return TxStatus(TxState.MEMPOOL)
        record = self._index.tx(txid)
        if record is None:
            return TxStatus(TxState.UNKNOWN)
        return TxStatus(TxState.CONFIRMED, self.height - record.height + 1, record.height, record.block_hash)

    def raw_transaction(self, txid: bytes) -> Optional[bytes]:
        entry = self._mempool.get(txid)
        if entry is not None:
            return entry.raw
        record = self._index.tx(txid)
        if record is None:
            return None
        return self._recent_block(record.height)[record.start : record.end]

    def _recent_block(self, height: int) -> bytes:
        """A block of the active chain from the kernel's files; the last few read are kept, as
        the transactions asked for are mostly in the newest blocks."""
        cache = self._block_cache
        raw = cache.get(height)
        if raw is None:
            raw = cache[height] = self._kernel.block_at(height)
            if len(cache) > BLOCK_CACHE_SIZE:
                del cache[next(iter(cache))]
        return raw

    def spender_of(self, outpoint: OutPoint) -> Optional[bytes]:
        return self._index.spender(outpoint) or self._mempool.spends.get(outpoint)

    def unspent_outputs(self, script_pubkey: bytes) -> list[Utxo]:
        script_pubkey = bytes(script_pubkey)
        found = self._index.unspent_for(script_pubkey) + self._mempool.outputs_paying(script_pubkey)
        return sorted((u for u in found if u.outpoint not in self._mempool.spends), key=lambda u: u.outpoint)

    def scan(self, scripts: Iterable[bytes]) -> list[Utxo]:
        """Confirmed unspent outputs paying any of ``scripts`` (like ``scantxoutset``)."""
        return self._index.scan(bytes(s) for s in scripts)

    def mempool_entries(self) -> list[MempoolEntry]:
        """The mempool in mining order."""
        return list(self._mempool)

    # -- transactions ----------------------------------------------------------------------

    def accept(self, raw: bytes) -> bytes:
        """Judge a transaction for the mempool like ``sendrawtransaction``; its txid, or
        :class:`BroadcastRejected`. A transaction already known (mempool or chain) is fine."""
        size = len(self._mempool)
        last = next(reversed(self._mempool.entries), None)
        self._evicted = []
        txid = self._accept(bytes(raw))
        entry = self._mempool.get(txid)
        if entry is None or txid == last:
            return txid  # known already (the pool appends in arrival order): nobody to wake
        if self.tx_feed:
            evicted = [MempoolRemoved(self._evicted)] if self._evicted else []
            self.tx_feed.publish([*evicted, MempoolAdded([feed_tx(txid, entry.tx)])])
        # Others left the pool (replaced) if it did not grow by one: their spends vanished.
        self._notify_touched(inputs_of(entry.tx), len(self._mempool) != size + 1)
        self._notify_change()
        return txid

    def _accept(self, raw: bytes) -> bytes:
        tx = rules.parse_transaction(raw)
        txid: bytes = tx.GetTxid()
        if txid in self._mempool or self._index.has_tx(txid):
            return txid
        evicted: list[bytes] = []

        def replace(conflicts: set[bytes], fee: int, vsize: int) -> None:
            evicted.extend(self.replaced_by(txid, tx, conflicts, fee, vsize))

        fee = rules.check_acceptance(
            raw,
            tx,
            self._coin,
            self._mempool.spends.get,
            rules.NextBlock(self.height + 1, self.median_time_past()),
            self._index.mtp_at,
            replace,
        )
        if evicted:  # Core's full RBF: the replaced transactions and their descendants go
            self._evicted = [e.txid for e in self._mempool.remove(evicted)]
        self._mempool.add(MempoolEntry(txid, tx, raw, fee, weight(tx), self.reactor.seconds()))
        return txid

    def replaced_by(self, txid: bytes, tx: Any, conflicts: set[bytes], fee: int, vsize: int) -> list[bytes]:
        """What ``tx`` would evict from the mempool (Core's full RBF), or BroadcastRejected."""
        return judge_replacement(txid, tx, fee, vsize, conflicts, self._mempool, DEFAULT_MIN_RELAY_TX_FEE)

    def _coin(self, point: OutPoint) -> Optional[Utxo]:
        return self._index.coin(point) or self._mempool.coin(point)

    # -- blocks ----------------------------------------------------------------------------

    def next_block_time(self) -> int:
        return max(int(self.reactor.seconds()), self.median_time_past() + 1)

    def generate(self, count: int = 1, script_pubkey: Optional[bytes] = None) -> list[bytes]:
        """Mine ``count`` blocks paying ``script_pubkey`` (default: the node's coinbase
        script), the first ones taking the mempool; their hashes."""
        if count < 0:
            raise ValueError(f"cannot mine {count} blocks")
        script = self.coinbase_script if script_pubkey is None else bytes(script_pubkey)
        hashes = []
        for _ in range(count):
            entries = self._block_template()
            block = miner.build_block(
                self.block_hash_at(self.height),
                self.height + 1,
                self.next_block_time(),
                script,
                [e.raw for e in entries],
                sum(e.fee for e in entries),
                txids=[e.txid for e in entries],
            )
            verdict = self.submit_block(block.raw)
            if not verdict.accepted:
                raise MiningFailed(verdict.reason)
            hashes.append(block.block_hash)
        return hashes

    def _block_template(self) -> list[MempoolEntry]:
        """Mempool entries for the next block: front to back, within the weight limit, never a
        child without its parents."""
        budget = miner.MAX_BLOCK_WEIGHT - miner.COINBASE_WEIGHT_RESERVE
        taken: set[bytes] = set()
        chosen: list[MempoolEntry] = []
        for entry in self._mempool:
            weight = entry.weight
            parents_in_pool = {bytes(txin.prevout.hash) for txin in entry.tx.vin} & self._mempool.entries.keys()
            if weight > budget or not parents_in_pool <= taken:
                continue
            budget -= weight
            taken.add(entry.txid)
            chosen.append(entry)
        return chosen

    def submit_block(self, raw_block: bytes) -> BlockVerdict:
        """Hand any block to the kernel (``submitblock``); indexes, mempool and listeners
        follow whatever the active chain became."""
        try:
            block = parse_block(bytes(raw_block))
        except Exception as e:  # python-bitcoinlib raises several types on bad input
            return BlockVerdict(False, f"block decode failed: {e}")
        self._submitted = block  # parsed once: the kernel's connect callback reuses it
        try:
            verdict = self._kernel.process_block(bytes(raw_block), block.block_hash)
        finally:
            self._submitted = None
            self._after_blocks()
        if not verdict.accepted:
            log.debug("block {hash} not accepted: {reason}", hash=block.block_hash[::-1].hex(), reason=verdict.reason)
        return verdict

    def _on_connected(self, raw_block: bytes, height: int) -> None:
        self._connected_raw.append(bytes(raw_block))
        submitted = self._submitted
        block = submitted if submitted is not None and submitted.header == raw_block[:80] else parse_block(raw_block)
        self._index.connect(block, height)
        self._connected.append(block)

    def _on_disconnected(self, raw_block: bytes, height: int, spent: list[list[SpentCoin]]) -> None:
        self._block_cache.clear()
        block = parse_block(raw_block)
        self._index.disconnect(block, height, spent)
        self._disconnected.append(block)

    def _replay_journal(self) -> None:
        """Give the kernel back any block it lost in a crash (see ``journal``)."""
        known = self._kernel.height
        replayed = 0
        for height, raw in enumerate(self._journal.blocks(), start=1):
            if height <= known:
                continue
            verdict = self._kernel.process_block(raw, parse_block(raw).block_hash)
            if not verdict.accepted:
                log.warn("journal block {height} not accepted again: {reason}", height=height, reason=verdict.reason)
                break
            replayed += 1
        self._connected.clear()
        self._disconnected.clear()
        self._connected_raw.clear()
        if replayed:
            log.info("replayed {n} block(s) the kernel had not flushed before a crash", n=replayed)

    def _after_blocks(self) -> None:
        connected, self._connected = self._connected, []
        disconnected, self._disconnected = self._disconnected, []
        connected_raw, self._connected_raw = self._connected_raw, []
        if disconnected:
            self._journal.rewrite(self._kernel.block_at(h) for h in range(1, self.height + 1))
        else:
            self._journal.append(connected_raw)
        feed = self.tx_feed if self.tx_feed and (connected or disconnected) else None
        before = set(self._mempool.entries) if feed is not None and disconnected else set()
        conflicted: list[bytes] = []
        if disconnected:
            self._resubmit([raw for block in reversed(disconnected) for raw in block.raws[1:]])
        else:
            for block in connected:
                conflicted.extend(e.txid for e in self._mempool.remove_for_block(block.txs, block.txids))
        if feed is not None:
            feed.publish(self._feed_events(connected, disconnected, before, conflicted))
        if not connected and not disconnected:
            return
        spent = [p for block in (*connected, *disconnected) for tx in block.txs[1:] for p in inputs_of(tx)]
        first = self.height - len(connected) + 1
        for height in range(first, self.height + 1):
            tip = self.tip_at(height)
            for callback in list(self._block_listeners):
                callback(tip)
        self._notify_touched(spent, True)
        self._notify_change()

    def _feed_events(
        self, connected: list[ParsedBlock], disconnected: list[ParsedBlock], before: set[bytes], conflicted: list[bytes]
    ) -> list[ChainEvent]:
        """What the transaction feed hears of blocks that joined or left the best chain (the
        disconnected tip first) and of what that did to the mempool: the conflicts a block
        removed, or, after a reorg, what left and what came back (``before``: the mempool
        then)."""
        fork = self.height - len(connected)
        events: list[ChainEvent] = [
            BlockDisconnected(fork + len(disconnected) - i, block.block_hash) for i, block in enumerate(disconnected)
        ]
        events += [
            BlockConnected(fork + 1 + i, block.block_hash, [feed_tx(t, tx) for t, tx in zip(block.txids, block.txs)])
            for i, block in enumerate(connected)
        ]
        added: list[FeedTx] = []
        if disconnected:
            mined = {t for block in connected for t in block.txids}
            now = self._mempool.entries
            conflicted = [t for t in before if t not in now and t not in mined]
            added = [feed_tx(t, e.tx) for t, e in now.items() if t not in before]
        if conflicted:
            events.append(MempoolRemoved(conflicted))
        if added:
            events.append(MempoolAdded(added))
        return events

    def _resubmit(self, returning: Sequence[bytes]) -> None:
        """After a reorg: transactions of disconnected blocks, then the old mempool, judged
        again against the new tip (as Core does)."""
        old = self._mempool.clear()
        for raw in [*returning, *(entry.raw for entry in old)]:
            try:
                self._accept(raw)
            except BroadcastRejected as e:
                log.info("dropped from the mempool after a reorg: {reason}", reason=e.reason)

    def _notify_touched(self, outpoints: list[OutPoint], seen_spends_changed: bool) -> None:
        for callback in list(self._touch_listeners):
            callback(outpoints, seen_spends_changed)

    def _notify_change(self) -> None:
        for callback in list(self._change_listeners):
            callback()

    # -- automatic mining ------------------------------------------------------------------

    def start_mining(self, interval: float) -> None:
        """Mine a block every ``interval`` seconds of the reactor's clock until stopped."""
        self.stop_mining()
        loop = LoopingCall(self._mine_one)
        loop.clock = self.reactor
        self._auto_mine = loop
        loop.start(interval, now=False).addErrback(
            lambda f: log.failure("automatic mining stopped", failure=f)
        )

    def _mine_one(self) -> None:
        self.generate(1)

    def stop_mining(self) -> None:
        if self._auto_mine is not None and self._auto_mine.running:
            self._auto_mine.stop()
        self._auto_mine = None
