"""
``RpcChain``: :class:`IChain` over Bitcoin Core's JSON-RPC, for a real bitcoind on any network
or for our embedded node's RPC server. ``RpcFeeEstimator``: :class:`IFeeEstimator` over
``estimatesmartfee``.

What each IChain method asks the node:

* ``broadcast``: ``sendrawtransaction``. Core's refusals become :class:`BroadcastRejected` with
  Core's message, code and what they mean (``rejects``); -27 ("already in utxo set") and a -25
  for a transaction that is in fact confirmed count as success, as IChain asks. A node that
  cannot be asked fails the broadcast with ``RejectKind.UNREACHABLE``.
* ``tx_status`` / ``get_transaction``: ``getrawtransaction``. Without ``-txindex`` Core finds
  only mempool transactions (and wallet ones), so the client remembers the block of every
  transaction it broadcast or saw in the mempool once the follower sees it confirmed, and asks
  with that block hash (``getrawtransaction txid verbosity blockhash``), which works on any node.
* ``tip``: ``getblockchaininfo`` (``getblockheader`` on nodes that do not give ``time``).
* ``unspent_outputs``: ``scantxoutset start ["raw(<script>)"]`` for confirmed coins (no index
  needed; it reads the whole UTXO set, which takes a minute or more on mainnet), plus a copy of
  the mempool (``mempool``) for unconfirmed ones and mempool spends.
* ``scan_outputs``: one ``scantxoutset`` with a ``raw()`` descriptor per script, however many:
  a wallet's one full scan.
* ``watch_transactions``: at the end of each poll, each new block (``getblock <hash> 0``, read
  once for the spend watches and every feed watch) and the mempool copy's changes
  (``blockfeed``); a watch that starts behind reads the blocks it missed.
* ``watch_spend`` / ``watch_blocks``: a poll every ``poll_interval`` seconds of the injected
  clock (``ChainFollower`` for new blocks and reorgs, the blocks themselves for spends,
  ``gettxspendingprevout`` for mempool spends, falling back to the mempool copy on nodes older
  than Core 24). Notifications are delivered at the end of a poll, never from inside a call.

Polling starts with :meth:`RpcChain.start` (or the first watch); :meth:`RpcChain.poll` runs one
poll now, which is what tests and command-line tools use instead of waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Collection, Optional, Sequence, Union

from bitcoin.core import CTransaction
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_paychan.chain.health import ChainHealth, HealthTracker
from twisted_paychan.chain.fees import (
    CONFIRMATION_TARGETS,
    TARGETS,
    NoFeeEstimate,
    UnknownTarget,
    fee_rate_from_estimatesmartfee,
)
from twisted_paychan.chain.interfaces import ICancellable, IChain, IFeeEstimator, ITransactionWatch
from twisted_paychan.chain.feed import ChainEvent
from twisted_paychan.chain.rpc import rejects
from twisted_paychan.chain.rpc.blockfeed import RpcTransactionFeed
from twisted_paychan.chain.rpc.follower import BlockSource, ChainFollower, Header
from twisted_paychan.chain.rpc.mempool import RemoteMempool
from twisted_paychan.chain.rpc.watches import SpendWatch, WatchLists
from twisted_paychan.chain.types import (
    BlockId,
    BroadcastRejected,
    ChainTip,
    RejectKind,
    OutPoint,
    OutputScan,
    SpendEvent,
    TxState,
    TxStatus,
    Utxo,
    from_display_hex,
)
from twisted_paychan.constants import FEE_RATE_FLOOR
from twisted_paychan.rpc.connection import RpcConnection
from twisted_paychan.rpc.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_METHOD_NOT_FOUND,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RpcError,
)
from twisted_paychan.rpc.jsonenc import sat

log = Logger()


def deliver_event(callback: Callable[[ChainEvent], Any], event: ChainEvent) -> None:
    """A feed callback that raises is logged, never propagated into the poll."""
    try:
        callback(event)
    except Exception:
        log.failure("transaction feed callback {callback!r} raised", callback=callback)


#: Core's ``getblockchaininfo`` chain names.
CHAIN_NAMES = ("main", "test", "testnet4", "signet", "regtest")


def _hex(h: bytes) -> str:
    return h[::-1].hex()


def _txid_of(raw: bytes) -> Optional[bytes]:
    try:
        txid: bytes = CTransaction.deserialize(raw).GetTxid()
    except Exception:  # not a transaction: let the node say so
        return None
    return txid


@implementer(IChain)
class RpcChain:
    """IChain over ``connection``. ``clock`` times the polls (the reactor, or a ``task.Clock``
    in tests); ``rescan_depth`` is how many blocks below the tip a new spend watch looks for a
    spend made before it started; a transaction the client saw unconfirmed is followed for
    ``pending_blocks`` blocks."""

    def __init__(
        self,
        connection: RpcConnection,
        clock: IReactorTime,
        *,
        poll_interval: float = 5.0,
        rescan_depth: int = 144,
        pending_blocks: int = 2016,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.connection = connection
        self.clock = clock
        self.poll_interval = poll_interval
        self.rescan_depth = rescan_depth
        self.pending_blocks = pending_blocks
        self.follower = ChainFollower(connection, keep=max(rescan_depth, 100) + 10)
        self._blocks = BlockSource(connection)
        self._mempool = RemoteMempool(connection)
        self._watches = WatchLists()
        self._feed = RpcTransactionFeed(connection, self.follower, self._blocks, self._mempool, self.poll)
        #: Txids we broadcast or saw in the mempool, not yet seen in a block: txid -> height.
        self._pending: dict[bytes, int] = {}
        #: Where those were confirmed, as far as we know: txid -> block hash.
        self._block_of: dict[bytes, bytes] = {}
        self._poll_lock = DeferredLock()
        self._scan_lock = DeferredLock()
        self._loop: Optional[LoopingCall] = None
        #: Every poll and broadcast reports here; a change of state is logged once.
        self.health_tracker = HealthTracker(connection.name, clock)
        self._kicked = False
        self._has_spendingprevout = True

    @classmethod
    def from_url(
        cls,
        reactor: Any,
        url: str,
        *,
        cookie_path: Union[str, Path, None] = None,
        credentials: Optional[tuple[str, str]] = None,
        clock: Optional[IReactorTime] = None,
        **options: Any,
    ) -> "RpcChain":
        """An RpcChain on ``http://[user:password@]host:port`` (credentials: ``credentials``,
        else the URL's, else ``cookie_path``); ``clock`` defaults to ``reactor``."""
        connection = RpcConnection(reactor, url, cookie_path=cookie_path, credentials=credentials)
        return cls(connection, reactor if clock is None else clock, **options)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> "Deferred[None]":
        """Poll now, then every ``poll_interval`` seconds; fires after the first poll."""
        if self._loop is not None:
            return succeed(None)
        self._loop = LoopingCall(self._scheduled_poll)
        self._loop.clock = self.clock
        first = self.poll()
        self._loop.start(self.poll_interval, now=False)
        return first

    def stop(self) -> "Deferred[None]":
        """Stop polling and close idle connections."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._poll_lock.acquire()
        self._poll_lock.release()
        await self.connection.close()

    @property
    def polling(self) -> bool:
        """Whether the poll loop is running."""
        return self._loop is not None and self._loop.running

    @property
    def health(self) -> ChainHealth:
        """How the node answered the last poll or broadcast (``chain.health``)."""
        return self.health_tracker.health

    def chain_name(self) -> "Deferred[str]":
        """Core's name for the node's network: main, test, testnet4, signet or regtest."""
        return self.connection.call("getblockchaininfo").addCallback(lambda info: str(info["chain"]))

    # -- IChain ----------------------------------------------------------------------------

    def broadcast(self, tx: bytes) -> "Deferred[bytes]":
        return Deferred.fromCoroutine(self._broadcast(bytes(tx)))

    async def _broadcast(self, raw: bytes) -> bytes:
        try:
            txid = await self._send(raw)
        except rejects.UNREACHABLE_ERRORS as e:
            self.health_tracker.failed(e)
            raise rejects.unreachable(e) from e
        except BroadcastRejected as e:
            if e.kind is not RejectKind.UNREACHABLE:
                self.health_tracker.succeeded()  # the node answered: it judged the transaction
            raise
        self.health_tracker.succeeded()
        return txid

    async def _send(self, raw: bytes) -> bytes:
        txid = _txid_of(raw)
        try:
            result = from_display_hex(await self.connection.call("sendrawtransaction", raw.hex()))
        except RpcError as e:
            if txid is not None and e.code == RPC_VERIFY_ALREADY_IN_CHAIN:
                return txid
            if txid is not None and e.code == RPC_VERIFY_ERROR:
                if (await self._tx_status(txid)).state is TxState.CONFIRMED:
                    return txid
            log.debug("node refused {txid}: {reason} ({code})", txid=_hex(txid or b""), reason=e.message, code=e.code)
            raise rejects.refused(e) from None
        self._pending.setdefault(result, self._tip_height())
        return result

    def tx_status(self, txid: bytes, block_hint: Optional[bytes] = None) -> "Deferred[TxStatus]":
        """See IChain. ``block_hint``: the block the caller believes holds it (needed, on a
        node without ``-txindex``, for a transaction this client never saw)."""
        return Deferred.fromCoroutine(self._tx_status(bytes(txid), block_hint))

    async def _lookup(self, txid: bytes, verbosity: int, block_hint: Optional[bytes] = None) -> Any:
        """getrawtransaction, retried with a remembered (or hinted) block; None if unknown."""
        try:
            return await self.connection.call("getrawtransaction", _hex(txid), verbosity)
        except RpcError as e:
            if e.code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
        block = block_hint or self._block_of.get(txid)
        if block is None:
            return None
        try:
            return await self.connection.call("getrawtransaction", _hex(txid), verbosity, _hex(block))
        except RpcError as e:
            if e.code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
            self._block_of.pop(txid, None)
            return None

    async def _tx_status(self, txid: bytes, block_hint: Optional[bytes] = None) -> TxStatus:
        info = await self._lookup(txid, 1, block_hint)
        if info is None:
            return TxStatus(TxState.UNKNOWN)
        block_hex = info.get("blockhash")
        if not block_hex:
            self._pending.setdefault(txid, self._tip_height())
            return TxStatus(TxState.MEMPOOL)
        header = await self.connection.call("getblockheader", block_hex, True)
        confirmations = int(header.get("confirmations", -1))
        if confirmations < 1:
            return TxStatus(TxState.UNKNOWN)  # in a block that is no longer on the active chain
        block_hash = from_display_hex(block_hex)
        self._block_of[txid] = block_hash
        self._pending.pop(txid, None)
        return TxStatus(TxState.CONFIRMED, confirmations, int(header["height"]), block_hash)

    def get_transaction(self, txid: bytes) -> "Deferred[Optional[bytes]]":
        async def get() -> Optional[bytes]:
            found = await self._lookup(bytes(txid), 0)
            return None if found is None else bytes.fromhex(found)

        return Deferred.fromCoroutine(get())

    def tip(self) -> "Deferred[ChainTip]":
        return Deferred.fromCoroutine(self._tip())

    async def _tip(self) -> ChainTip:
        info = await self.connection.call("getblockchaininfo")
        block_hash = from_display_hex(info["bestblockhash"])
        if "time" in info and "mediantime" in info:
            return ChainTip(int(info["blocks"]), block_hash, int(info["time"]), int(info["mediantime"]))
        return (await self.follower.header(block_hash)).chain_tip()

    def unspent_outputs(self, script_pubkey: bytes) -> "Deferred[list[Utxo]]":
        return Deferred.fromCoroutine(self._unspent_outputs(bytes(script_pubkey)))

    async def _unspent_outputs(self, script: bytes) -> list[Utxo]:
        await self._scan_lock.acquire()  # Core runs one scantxoutset at a time
        try:
            scan = await self.connection.call("scantxoutset", "start", [f"raw({script.hex()})"])
        finally:
            self._scan_lock.release()
        if not scan or not scan.get("success", False):
            raise RuntimeError("scantxoutset did not complete (aborted by another client?)")
        await self._mempool.refresh()
        found: dict[OutPoint, Utxo] = {}
        for item in scan["unspents"]:
            point = OutPoint(from_display_hex(item["txid"]), int(item["vout"]))
            found[point] = Utxo(point, sat(item["amount"]), script, int(item["height"]), bool(item.get("coinbase", False)))
        for utxo in self._mempool.outputs_paying(script):
            found.setdefault(utxo.outpoint, utxo)
        return sorted((u for p, u in found.items() if self._mempool.spender_of(p) is None), key=lambda u: u.outpoint)

    def scan_outputs(self, scripts: Collection[bytes]) -> "Deferred[OutputScan]":
        return Deferred.fromCoroutine(self._scan_outputs(sorted({bytes(s) for s in scripts})))

    async def _scan_outputs(self, scripts: list[bytes]) -> OutputScan:
        await self._scan_lock.acquire()  # Core runs one scantxoutset at a time
        try:
            scan = await self.connection.call("scantxoutset", "start", [f"raw({s.hex()})" for s in scripts])
        finally:
            self._scan_lock.release()
        if not scan or not scan.get("success", False):
            raise RuntimeError("scantxoutset did not complete (aborted by another client?)")
        height = int(scan["height"])
        if scan.get("bestblock"):
            best = from_display_hex(scan["bestblock"])
        else:  # Core before 22 does not say which block: the one at that height, asked at once
            best = from_display_hex(await self.connection.call("getblockhash", height))
        utxos = sorted(
            (
                Utxo(OutPoint(from_display_hex(item["txid"]), int(item["vout"])), sat(item["amount"]),
                     bytes.fromhex(item["scriptPubKey"]), int(item["height"]), bool(item.get("coinbase", False)))
                for item in scan["unspents"]
            ),
            key=lambda u: u.outpoint,
        )
        return OutputScan(utxos, BlockId(height, best))

    def watch_transactions(self, callback: Callable[[ChainEvent], Any], since: Sequence[BlockId] = ()) -> ITransactionWatch:
        watch = self._feed.watch(callback, since)
        self._ensure_polling()
        return watch

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        watch = self._watches.add_spend(outpoint, callback)
        self._ensure_polling()
        if not self._kicked:  # look soon, not only at the next tick (once for a burst of watches)
            self._kicked = True
            self.clock.callLater(0, self._kick)
        return watch

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        watch = self._watches.add_blocks(callback)
        self._ensure_polling()
        return watch

    # -- polling ---------------------------------------------------------------------------

    def _kick(self) -> None:
        self._kicked = False
        self._scheduled_poll()

    def _ensure_polling(self) -> None:
        if self._loop is None:
            self.start().addErrback(self._log_poll_failure)

    def _tip_height(self) -> int:
        return -1 if self.follower.tip is None else self.follower.tip.height

    def poll(self) -> "Deferred[None]":
        """One poll, after any poll in progress; fires once its notifications are delivered.
        Its outcome goes to ``health`` (a change of state is logged there, once)."""
        return self._poll_lock.run(lambda: Deferred.fromCoroutine(self._tracked_poll()))

    async def _tracked_poll(self) -> None:
        try:
            await self._poll()
        except Exception as e:
            self.health_tracker.failed(e)
            raise
        self.health_tracker.succeeded()

    def _scheduled_poll(self) -> "Deferred[None]":
        return self.poll().addErrback(self._log_poll_failure)

    def _log_poll_failure(self, failure: Failure) -> None:
        """Already counted (and logged on a change) by the health tracker; a failure that is
        no node's (a bug of ours) gets its traceback, once per run of failures."""
        first = self.health_tracker.health.failures <= 1
        if first and not isinstance(failure.value, rejects.UNREACHABLE_ERRORS + (RpcError,)):
            log.failure("polling {node} failed", failure, node=self.connection.name)

    async def _poll(self) -> None:
        disconnected, connected = await self.follower.update()
        tip = self.follower.tip
        assert tip is not None
        self._forget_blocks(disconnected)
        spends = self._watches.spends
        if connected and (self._pending or any(not w.resolved for w in spends)):
            for header in connected:
                await self._scan_block(header)
        # A transaction feed needs the mempool copy each poll; fresh, it also answers the
        # spend watches' mempool spends, so those cost no call however many they are.
        fresh = bool(self._feed.watches)
        if fresh:
            await self._mempool.refresh()
        unresolved = [w for w in spends if not w.resolved]
        if unresolved:
            await self._find_mempool_spends(unresolved, fresh)
        for watch in [w for w in spends if not w.checked]:
            await self._initial_check(watch, tip)
        for txid, since in list(self._pending.items()):
            if tip.height - since > self.pending_blocks:
                del self._pending[txid]
        feed: list[tuple[Any, list[ChainEvent]]] = await self._feed.advance() if fresh else []
        self._watches.deliver(self._watches.events(connected, tip))
        for watch, events in feed:
            for event in events:
                if not watch.cancelled:
                    deliver_event(watch.callback, event)

    def _forget_blocks(self, disconnected: list[Header]) -> None:
        if not disconnected:
            return
        gone = {h.block_hash for h in disconnected}
        log.info("reorg: {n} block(s) left the active chain", n=len(gone))
        for watch in self._watches.spends:
            if watch.spend_block is not None and watch.spend_block.block_hash in gone:
                watch.spend_block = None
                watch.in_mempool = False
        for txid, block_hash in list(self._block_of.items()):
            if block_hash in gone:
                del self._block_of[txid]
                self._pending[txid] = self._tip_height()

    async def _scan_block(self, header: Header) -> None:
        block = await self._blocks.get(header.block_hash)
        # By outpoint, from the smaller side: a block costs what it spends, not what is watched.
        by_outpoint = self._watches.by_outpoint
        if len(block.spends) <= len(by_outpoint):
            hits = [(p, t) for p, t in block.spends.items() if p in by_outpoint]
        else:
            hits = [(p, t) for p in by_outpoint if (t := block.spends.get(p)) is not None]
        for point, spender in hits:
            for watch in by_outpoint[point]:
                if not watch.resolved:
                    watch.found(spender, block.raws[spender], header)
        for txid in [t for t in self._pending if t in block.raws]:
            del self._pending[txid]
            self._block_of[txid] = header.block_hash

    async def _find_mempool_spends(self, watches: list[SpendWatch], fresh: bool = False) -> None:
        """``fresh``: the mempool copy was refreshed in this poll and answers for the node."""
        if fresh:
            spenders = {w.outpoint: t for w in watches if (t := self._mempool.spender_of(w.outpoint)) is not None}
        else:
            spenders = await self._mempool_spenders([w.outpoint for w in watches])
        for watch in watches:
            txid = spenders.get(watch.outpoint)
            if txid is None:
                watch.in_mempool = False
                continue
            if txid != watch.spender_txid:
                known = self._mempool.raws.get(txid) if fresh else None
                if known is None:
                    raw = await self._lookup(txid, 0)
                    if raw is None:
                        continue  # left the mempool in between; next poll
                    known = bytes.fromhex(raw)
                watch.found(txid, known, None)
            watch.in_mempool = True
            self._pending.setdefault(txid, self._tip_height())

    async def _mempool_spenders(self, outpoints: list[OutPoint]) -> dict[OutPoint, bytes]:
        if self._has_spendingprevout:
            try:
                answer = await self.connection.call(
                    "gettxspendingprevout", [{"txid": _hex(p.txid), "vout": p.index} for p in outpoints]
                )
            except RpcError as e:
                if e.code != RPC_METHOD_NOT_FOUND:
                    raise
                log.info("{node} has no gettxspendingprevout (Core < 24): copying its mempool", node=self.connection.name)
                self._has_spendingprevout = False
            else:
                return {
                    OutPoint(from_display_hex(a["txid"]), int(a["vout"])): from_display_hex(a["spendingtxid"])
                    for a in answer
                    if a.get("spendingtxid")
                }
        await self._mempool.refresh()
        return {p: t for p in outpoints if (t := self._mempool.spender_of(p)) is not None}

    async def _initial_check(self, watch: SpendWatch, tip: Header) -> None:
        """Was the outpoint spent in a block before the watch started? Looks back from the tip
        to the block that created it, or ``rescan_depth`` blocks."""
        point = watch.outpoint
        if await self.connection.call("gettxout", _hex(point.txid), point.index, True) is not None:
            watch.checked = True  # unspent
            return
        lowest = max(0, tip.height - self.rescan_depth + 1)
        funding = await self._lookup(point.txid, 1)
        if funding is not None:
            if not funding.get("blockhash"):
                watch.checked = True  # created in the mempool: not spent in a block
                return
            header = await self.connection.call("getblockheader", funding["blockhash"], True)
            if int(header.get("confirmations", -1)) > 0:
                lowest = max(lowest, int(header["height"]))
        for height in range(tip.height, lowest - 1, -1):
            header_at = await self.follower.header_at(height)
            block = await self._blocks.get(header_at.block_hash)
            spender = block.spends.get(point)
            if spender is not None:
                watch.found(spender, block.raws[spender], header_at)
                return
            if point.txid in block.raws:
                break  # the block that created it: nothing earlier spends it
        watch.checked = True


@implementer(IFeeEstimator)
class RpcFeeEstimator:
    """Fee rates from the node's ``estimatesmartfee`` (sat/kB, never below ``floor``).

    A node with too little data (a fresh node, regtest without a configured rate) has no
    estimate; then ``fallback`` (sat/kB) is used if given, else the Deferred fails with
    :class:`NoFeeEstimate`.
    """

    def __init__(
        self,
        connection: RpcConnection,
        *,
        floor: int = FEE_RATE_FLOOR,
        fallback: Optional[int] = None,
        mode: str = "economical",
    ) -> None:
        self.connection = connection
        self.floor = floor
        self.fallback = fallback
        self.mode = mode

    def fee_rate(self, target: str) -> "Deferred[int]":
        if target not in TARGETS:
            raise UnknownTarget(f"fee target must be one of {', '.join(TARGETS)}; got {target!r}")
        return Deferred.fromCoroutine(self._fee_rate(target))

    async def _fee_rate(self, target: str) -> int:
        result = await self.connection.call("estimatesmartfee", CONFIRMATION_TARGETS[target], self.mode)
        try:
            return fee_rate_from_estimatesmartfee(result, self.floor)
        except NoFeeEstimate:
            if self.fallback is None:
                raise
            log.info("no fee estimate for {target}; using the fallback {rate} sat/kB", target=target, rate=self.fallback)
            return max(self.fallback, self.floor)


__all__ = ["RpcChain", "RpcFeeEstimator", "CHAIN_NAMES"]
