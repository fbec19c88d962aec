"""
How a wallet follows the chain: one scan, then block by block (issue #21).

The wallet used to ask the chain for every unspent output of every script on every block and
rewrite its whole coin table: a block cost what the wallet's history cost, and on Bitcoin Core
one ``scantxoutset`` of the whole UTXO set per script. Now:

* :class:`CoinBook` holds what the chain says about our scripts: the confirmed coins as of the
  block the wallet is synced to; the coins spent in the last :data:`UNDO_DEPTH` blocks and the
  hashes of those blocks, so a reorganisation can be undone; and the mempool transactions that
  pay us or spend our coins. It applies each event of the transaction feed (``chain.feed``) and
  says what changed: the outpoints whose coin appeared, moved or went (the wallet's view), and a
  :class:`CoinWrite` (what a durable wallet writes, in one transaction). Its work per event is
  the event's size: a look-up per output script and per input.
* :class:`ChainSync` drives it: the one full scan (``IChain.scan_outputs``, all scripts at once)
  when the wallet has never been synced (a new wallet, a file from before schema 3) or lost
  track (a reorganisation deeper than it remembers); then ``IChain.watch_transactions`` from
  where the wallet is synced to (after a restart: the blocks mined meanwhile, and back down
  first if the chain reorganised below that point); ``sync`` for the callers that want the
  chain's latest word now (``balance``, ``coins``, ``fund``).

The wallet's coins are then exactly what ``IChain.unspent_outputs`` of each script would say:
the confirmed ones, plus the mempool's outputs paying us, minus what the mempool spends.

The mempool part is never written: it is read again from the chain whenever the wallet starts
following (the feed hands over the whole mempool first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Final, Iterable, Optional, Protocol

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from twisted_paychan.chain.feed import (
    BlockConnected,
    BlockDisconnected,
    ChainEvent,
    FeedGap,
    FeedTx,
    MempoolAdded,
    MempoolRemoved,
)
from twisted_paychan.chain.interfaces import ITransactionWatch
from twisted_paychan.chain.types import BlockId, OutPoint, OutputScan, Utxo, display_hex

__all__ = ["UNDO_DEPTH", "CoinBook", "CoinWrite", "ChainSync", "SpentCoin"]

log = Logger()

#: Blocks a reorganisation may undo without a new scan: what the wallet remembers of spent
#: coins and block hashes. Core's deepest reorganisations on mainnet were a few blocks.
UNDO_DEPTH: Final = 144


@dataclass(frozen=True)
class SpentCoin:
    utxo: Utxo
    #: The height of the block that spent it.
    height: int


@dataclass
class CoinWrite:
    """What one event changed in the durable part of a :class:`CoinBook`."""

    #: A full scan: every coin and block is replaced by ``created`` and ``block_added``.
    replace: bool = False
    created: list[Utxo] = field(default_factory=list)
    #: Coins spent in a block: (outpoint, that block's height).
    spent: list[tuple[OutPoint, int]] = field(default_factory=list)
    #: Coins whose spending block was disconnected: unspent again.
    unspent: list[OutPoint] = field(default_factory=list)
    #: Coins created in a disconnected block.
    deleted: list[OutPoint] = field(default_factory=list)
    block_added: Optional[BlockId] = None
    #: Blocks from this height up left the best chain.
    blocks_removed_from: Optional[int] = None
    #: Spent coins and block hashes at or below this height are forgotten.
    prune_to: Optional[int] = None

    def __bool__(self) -> bool:
        return bool(self.replace or self.created or self.spent or self.unspent or self.deleted
                    or self.block_added or self.blocks_removed_from is not None)


class UndoImpossible(Exception):
    """A disconnected block is deeper than what the book remembers: scan again."""


class CoinBook:
    """The chain's word on our scripts; see the module docstring. ``is_mine(script)`` says
    whether an output paying ``script`` is ours."""

    def __init__(self, is_mine: Callable[[bytes], bool]) -> None:
        self._is_mine = is_mine
        self.synced: Optional[BlockId] = None
        #: Hashes of the last UNDO_DEPTH blocks applied, by height.
        self.blocks: dict[int, bytes] = {}
        self.confirmed: dict[OutPoint, Utxo] = {}
        #: Confirmed coins created in each of the last UNDO_DEPTH blocks.
        self.created_at: dict[int, list[OutPoint]] = {}
        self.spent: dict[OutPoint, SpentCoin] = {}
        self.spent_at: dict[int, list[OutPoint]] = {}
        #: Mempool transactions that pay us or spend our coins: txid -> (our outputs, our inputs).
        self.pool: dict[bytes, tuple[tuple[OutPoint, ...], tuple[OutPoint, ...]]] = {}
        self.pool_coins: dict[OutPoint, Utxo] = {}
        self.pool_spent: dict[OutPoint, bytes] = {}
        #: Outpoints whose view may have changed since the wallet last looked.
        self.touched: set[OutPoint] = set()

    # -- what the wallet sees --------------------------------------------------------------

    def view_of(self, point: OutPoint) -> Optional[Utxo]:
        """The coin at ``point`` as ``unspent_outputs`` would list it, or None."""
        if point in self.pool_spent:
            return None
        return self.confirmed.get(point) or self.pool_coins.get(point)

    def view(self) -> dict[OutPoint, Utxo]:
        coins = {p: u for p, u in self.confirmed.items() if p not in self.pool_spent}
        coins.update((p, u) for p, u in self.pool_coins.items() if p not in self.pool_spent and p not in coins)
        return coins

    def locator(self) -> list[BlockId]:
        """The blocks held, newest first: where ``watch_transactions`` starts."""
        return [BlockId(h, self.blocks[h]) for h in sorted(self.blocks, reverse=True)]

    # -- loading ---------------------------------------------------------------------------

    def load(self, coins: Iterable[Utxo], spent: Iterable[SpentCoin], blocks: dict[int, bytes]) -> None:
        """State a durable wallet stored (see :class:`CoinWrite`)."""
        self.blocks = dict(blocks)
        if blocks:
            top = max(blocks)
            self.synced = BlockId(top, blocks[top])
        low = self._low()
        for u in coins:
            self.confirmed[u.outpoint] = u
            if u.height is not None and u.height > low:
                self.created_at.setdefault(u.height, []).append(u.outpoint)
        for s in spent:
            self.spent[s.utxo.outpoint] = s
            self.spent_at.setdefault(s.height, []).append(s.utxo.outpoint)
            if s.utxo.height is not None and s.utxo.height > low:
                self.created_at.setdefault(s.utxo.height, []).append(s.utxo.outpoint)

    def _low(self) -> int:
        return -1 if self.synced is None else self.synced.height - UNDO_DEPTH

    # -- events ----------------------------------------------------------------------------

    def replace(self, scan: OutputScan) -> CoinWrite:
        """Everything from a full scan; the mempool is read again by the watch that follows."""
        self.touched.update(self.confirmed, self.pool_coins, self.pool_spent)
        self.confirmed = {u.outpoint: u for u in scan.utxos}
        self.touched.update(self.confirmed)
        self.synced = scan.tip
        self.blocks = {scan.tip.height: scan.tip.block_hash}
        self.spent.clear()
        self.spent_at.clear()
        self.created_at = {}
        low = self._low()
        for u in scan.utxos:
            if u.height is not None and u.height > low:
                self.created_at.setdefault(u.height, []).append(u.outpoint)
        self.clear_pool()
        return CoinWrite(replace=True, created=list(scan.utxos), block_added=scan.tip)

    def merge(self, scan: OutputScan) -> CoinWrite:
        """Coins of scripts the wallet has just started to count (a channel key tracked late),
        added to what it holds."""
        write = CoinWrite()
        for u in scan.utxos:
            if u.outpoint not in self.confirmed and u.outpoint not in self.spent:
                self.confirmed[u.outpoint] = u
                self.touched.add(u.outpoint)
                write.created.append(u)
                if u.height is not None and u.height > self._low():
                    self.created_at.setdefault(u.height, []).append(u.outpoint)
        return write

    def connect(self, block: BlockConnected) -> CoinWrite:
        """A block joined the best chain on top of ``synced`` (or is ``synced`` again, with
        more transactions: the memory chain's credit)."""
        height = block.height
        write = CoinWrite()
        for tx in block.txs:
            if tx.txid in self.pool:
                self._drop_pooled(tx.txid)
            for point in tx.inputs:
                coin = self.confirmed.pop(point, None)
                if coin is not None:
                    self.spent[point] = SpentCoin(coin, height)
                    self.spent_at.setdefault(height, []).append(point)
                    write.spent.append((point, height))
                    self.touched.add(point)
            for index, (value, script) in enumerate(tx.outputs):
                if self._is_mine(script):
                    point = OutPoint(tx.txid, index)
                    if point in self.confirmed or point in self.spent:
                        continue
                    utxo = Utxo(point, value, script, height, tx.coinbase)
                    self.confirmed[point] = utxo
                    self.created_at.setdefault(height, []).append(point)
                    write.created.append(utxo)
                    self.touched.add(point)
        if self.synced != block.block:
            self.synced = block.block
            self.blocks[height] = block.block_hash
            write.block_added = block.block
            low = height - UNDO_DEPTH
            if self.blocks.pop(low, None) is not None or low in self.spent_at or low in self.created_at:
                for point in self.spent_at.pop(low, ()):
                    self.spent.pop(point, None)
                self.created_at.pop(low, None)
                write.prune_to = low
        return write

    def disconnect(self, block: BlockDisconnected) -> CoinWrite:
        """The block at ``synced`` left the best chain: undo it. :class:`UndoImpossible` when
        the block below is no longer remembered."""
        height = block.height
        below = self.blocks.get(height - 1)
        if self.synced != BlockId(height, block.block_hash) or below is None:
            raise UndoImpossible(f"block {display_hex(block.block_hash)} at height {height} is not one this wallet can undo")
        write = CoinWrite(blocks_removed_from=height)
        for point in self.spent_at.pop(height, ()):
            spent = self.spent.pop(point, None)
            if spent is not None:
                self.confirmed[point] = spent.utxo
                write.unspent.append(point)
                self.touched.add(point)
        for point in self.created_at.pop(height, ()):
            self.confirmed.pop(point, None)
            self.spent.pop(point, None)
            write.deleted.append(point)
            self.touched.add(point)
        del self.blocks[height]
        self.synced = BlockId(height - 1, below)
        return write

    def pool_added(self, txs: Iterable[FeedTx]) -> None:
        """Transactions entered the mempool. Outputs first, then spends: a batch (the whole
        mempool, from a node that lists it in no order) may name a child before its parent."""
        fresh = [tx for tx in txs if tx.txid not in self.pool]
        outputs: dict[bytes, tuple[OutPoint, ...]] = {}
        for tx in fresh:
            ours = []
            for index, (value, script) in enumerate(tx.outputs):
                if self._is_mine(script):
                    point = OutPoint(tx.txid, index)
                    self.pool_coins[point] = Utxo(point, value, script, None)
                    self.touched.add(point)
                    ours.append(point)
            if ours:
                outputs[tx.txid] = tuple(ours)
        for tx in fresh:
            spends = tuple(p for p in tx.inputs if p in self.confirmed or p in self.pool_coins)
            for point in spends:
                self.pool_spent[point] = tx.txid
                self.touched.add(point)
            if spends or tx.txid in outputs:
                self.pool[tx.txid] = (outputs.get(tx.txid, ()), spends)

    def pool_removed(self, txids: Iterable[bytes]) -> None:
        for txid in txids:
            if txid in self.pool:
                self._drop_pooled(txid)

    def clear_pool(self) -> None:
        for txid in list(self.pool):
            self._drop_pooled(txid)

    def _drop_pooled(self, txid: bytes) -> None:
        outputs, spends = self.pool.pop(txid)
        for point in outputs:
            self.pool_coins.pop(point, None)
            self.touched.add(point)
        for point in spends:
            if self.pool_spent.get(point) == txid:
                del self.pool_spent[point]
                self.touched.add(point)


class FollowingWallet(Protocol):
    """What :class:`ChainSync` needs of its wallet (``BaseWallet``)."""

    def scanned_scripts(self) -> list[bytes]: ...

    def apply_coin_write(self, write: CoinWrite) -> None: ...


class ChainSync:
    """Keeps a :class:`CoinBook` following ``chain``; see the module docstring."""

    def __init__(self, wallet: FollowingWallet, chain: Any, book: CoinBook) -> None:
        self._wallet = wallet
        self._chain = chain
        self.book = book
        self._watch: Optional[ITransactionWatch] = None
        self._lock = DeferredLock()
        #: Scan everything again before following (lost track).
        self._rescan = False
        #: Scripts counted since the last scan whose earlier coins are not known yet.
        self._unscanned: set[bytes] = set()
        #: Keep following after a gap without waiting for a caller (``start``ed).
        self.running = False
        #: How many full scans this wallet made (restore and tests count them).
        self.scans = 0

    @property
    def following(self) -> bool:
        return self._watch is not None

    def scan_later(self, script: bytes) -> None:
        self._unscanned.add(bytes(script))

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def sync(self) -> "Deferred[None]":
        """Fires once the book holds what the chain knows now (scanning first if needed)."""
        return self._lock.run(lambda: Deferred.fromCoroutine(self._sync()))

    async def _sync(self) -> None:
        # A gap found while delivering stops the watch: start again, a few times at most.
        for _ in range(3):
            if self._watch is None:
                if self.book.synced is None or self._rescan:
                    scan: OutputScan = await self._chain.scan_outputs(self._wallet.scanned_scripts())
                    self.adopt(scan)
                self._subscribe()
            if self._unscanned:
                scripts, self._unscanned = sorted(self._unscanned), set()
                merged: OutputScan = await self._chain.scan_outputs(scripts)
                self._wallet.apply_coin_write(self.book.merge(merged))
            watch = self._watch
            assert watch is not None
            await watch.sync()
            if self._watch is watch:
                return

    def adopt(self, scan: OutputScan) -> None:
        """Take a full scan as the wallet's coins (a restore made it); follow from its block."""
        self.stop()
        self.scans += 1
        self._rescan = False
        self._unscanned.clear()
        self._wallet.apply_coin_write(self.book.replace(scan))
        log.info("wallet scanned {n} script(s) at height {height}: {coins} coin(s)",
                 n=len(self._wallet.scanned_scripts()), height=scan.tip.height, coins=len(scan.utxos))

    def _subscribe(self) -> None:
        # The mempool comes again with the watch: what the book holds of it may be stale.
        self.book.clear_pool()
        self._wallet.apply_coin_write(CoinWrite())
        self._watch = self._chain.watch_transactions(self._on_event, self.book.locator())

    def _on_event(self, event: ChainEvent) -> None:
        book = self.book
        try:
            if isinstance(event, BlockConnected):
                synced = book.synced
                if synced is not None and event.block != synced and event.height != synced.height + 1:
                    log.warn("the chain skipped from {synced} to block {height}: following again from where the wallet is",
                             synced=synced.height, height=event.height)
                    return self._restart(rescan=False)
                self._wallet.apply_coin_write(book.connect(event))
            elif isinstance(event, BlockDisconnected):
                try:
                    write = book.disconnect(event)
                except UndoImpossible as e:
                    log.warn("{reason}: scanning again", reason=str(e))
                    return self._restart(rescan=True)
                self._wallet.apply_coin_write(write)
            elif isinstance(event, MempoolAdded):
                book.pool_added(event.txs)
                self._wallet.apply_coin_write(CoinWrite())
            elif isinstance(event, MempoolRemoved):
                book.pool_removed(event.txids)
                self._wallet.apply_coin_write(CoinWrite())
            elif isinstance(event, FeedGap):
                log.warn("the chain reorganised below the blocks this wallet remembers: scanning again")
                self._restart(rescan=True)
        except Exception:
            # A write that failed leaves the book ahead of the file: stop, and read the chain
            # again at the next sync rather than build on what may not be stored.
            self.stop()
            self._rescan = True
            raise

    def _restart(self, rescan: bool) -> None:
        self.stop()
        self._rescan = self._rescan or rescan
        if self.running:
            self.sync().addErrback(lambda f: log.failure("following the chain again failed", f))
