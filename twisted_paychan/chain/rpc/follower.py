"""
Following a remote node's best chain by polling, for ``RpcChain``'s notifications.

:class:`ChainFollower` remembers the recent headers of the active chain as it last saw them.
:meth:`ChainFollower.update` asks for the best block hash; if it moved, it walks back through
``getblockheader`` until it meets a header it knows, and reports which of its blocks left the
active chain (a reorg) and which joined it, oldest first. :class:`BlockSource` fetches raw blocks
by hash and keeps the last few parsed, so several watchers rescanning the same recent blocks
cost one download.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from twisted.logger import Logger

from twisted_paychan.chain.rpc.blocks import BlockTxs, parse_block_txs
from twisted_paychan.chain.types import ChainTip, from_display_hex
from twisted_paychan.rpc.connection import RpcConnection

log = Logger()


@dataclass(frozen=True)
class Header:
    block_hash: bytes
    height: int
    #: All zeros for the genesis block.
    prev_hash: bytes
    time: int
    median_time_past: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Header":
        prev = data.get("previousblockhash")
        return cls(
            from_display_hex(data["hash"]),
            int(data["height"]),
            from_display_hex(prev) if prev else b"\x00" * 32,
            int(data["time"]),
            int(data["mediantime"]),
        )

    def chain_tip(self) -> ChainTip:
        return ChainTip(self.height, self.block_hash, self.time, self.median_time_past)


class ChainFollower:
    """The active chain as last seen: up to ``keep`` recent headers by height."""

    def __init__(self, connection: RpcConnection, keep: int = 288, max_catchup: int = 2016) -> None:
        self._connection = connection
        self._keep = keep
        self._max_catchup = max_catchup
        self.headers: dict[int, Header] = {}
        self.tip: Optional[Header] = None

    async def header(self, block_hash: bytes) -> Header:
        return Header.from_json(await self._connection.call("getblockheader", block_hash[::-1].hex(), True))

    async def header_at(self, height: int) -> Header:
        known = self.headers.get(height)
        if known is not None:
            return known
        block_hash = from_display_hex(await self._connection.call("getblockhash", height))
        return await self.header(block_hash)

    async def update(self) -> tuple[list[Header], list[Header]]:
        """(disconnected, connected) since the last update, each oldest first. The first
        update only learns the tip."""
        best = from_display_hex(await self._connection.call("getbestblockhash"))
        if self.tip is not None and best == self.tip.block_hash:
            return [], []
        cursor = await self.header(best)
        if self.tip is None:
            self._adopt([cursor])
            return [], []
        lowest = min(self.headers)
        new = [cursor]
        while True:
            below = self.headers.get(cursor.height - 1)
            if below is not None and below.block_hash == cursor.prev_hash:
                break
            if cursor.height - 1 < lowest or cursor.height == 0:
                log.warn(
                    "the node's chain forked below the {keep} blocks remembered (at height {height});"
                    " spends in older blocks are not rescanned",
                    keep=self._keep,
                    height=cursor.height,
                )
                break
            if len(new) >= self._max_catchup:
                log.warn(
                    "more than {n} new blocks since the last poll; blocks below height {height} are skipped",
                    n=self._max_catchup,
                    height=cursor.height,
                )
                break
            cursor = await self.header(cursor.prev_hash)
            new.append(cursor)
        new.reverse()
        first = new[0].height
        disconnected = [self.headers[h] for h in sorted(self.headers) if h >= first]
        return disconnected, self._adopt(new)

    def _adopt(self, new: list[Header]) -> list[Header]:
        for height in [h for h in self.headers if h >= new[0].height]:
            del self.headers[height]
        for header in new:
            self.headers[header.height] = header
        self.tip = new[-1]
        for height in [h for h in self.headers if h <= self.tip.height - self._keep]:
            del self.headers[height]
        return new


class BlockSource:
    """Raw blocks by hash, parsed, the last ``cache_size`` kept."""

    def __init__(self, connection: RpcConnection, cache_size: int = 16) -> None:
        self._connection = connection
        self._cache: OrderedDict[bytes, BlockTxs] = OrderedDict()
        self._cache_size = cache_size

    async def get(self, block_hash: bytes) -> BlockTxs:
        cached = self._cache.get(block_hash)
        if cached is not None:
            self._cache.move_to_end(block_hash)
            return cached
        raw = bytes.fromhex(await self._connection.call("getblock", block_hash[::-1].hex(), 0))
        block = parse_block_txs(raw)
        if block.block_hash != block_hash:
            raise ValueError(f"asked for block {block_hash[::-1].hex()}, got {block.block_hash[::-1].hex()}")
        self._cache[block_hash] = block
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return block
