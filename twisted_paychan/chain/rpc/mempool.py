"""
A copy of a remote node's mempool, kept up to date incrementally.

Core has no "outputs paying this script, unconfirmed" call, so to list a script's unconfirmed
coins (``IChain.unspent_outputs``), to hand the mempool's changes to a transaction feed
(``blockfeed``: refreshed every poll while one watches, when it also answers the spend
watches), and to find mempool spends on nodes older than Core 24 (no
``gettxspendingprevout``), the client keeps the mempool's transactions: each refresh asks
``getrawmempool`` for the txids and fetches only the ones it has not seen, in batches. The first
refresh on a busy mainnet node fetches the whole mempool (tens of megabytes); later ones are
small.
"""

from __future__ import annotations

from typing import Optional

from bitcoin.core import CTransaction
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from twisted_paychan.chain.types import OutPoint, Utxo, from_display_hex
from twisted_paychan.rpc.connection import RpcConnection
from twisted_paychan.rpc.errors import RpcError

log = Logger()


class RemoteMempool:
    def __init__(self, connection: RpcConnection, batch_size: int = 200) -> None:
        self._connection = connection
        self._batch_size = batch_size
        self._lock = DeferredLock()
        self.txs: dict[bytes, CTransaction] = {}
        self.raws: dict[bytes, bytes] = {}
        self.spends: dict[OutPoint, bytes] = {}

    async def refresh(self) -> None:
        """Bring the copy up to date (one refresh at a time; a second caller waits)."""
        await self._lock.acquire()
        try:
            await self._refresh()
        finally:
            self._lock.release()

    async def _refresh(self) -> None:
        listed = {from_display_hex(t) for t in await self._connection.call("getrawmempool")}
        for txid in [t for t in self.txs if t not in listed]:
            self._remove(txid)
        missing = [t for t in listed if t not in self.txs]
        for start in range(0, len(missing), self._batch_size):
            chunk = missing[start : start + self._batch_size]
            results = await self._connection.batch(
                [("getrawtransaction", [t[::-1].hex(), 0]) for t in chunk]
            )
            for txid, result in zip(chunk, results):
                if isinstance(result, RpcError):
                    continue  # left the mempool since getrawmempool
                self._add(txid, bytes.fromhex(result))

    def _add(self, txid: bytes, raw: bytes) -> None:
        try:
            tx = CTransaction.deserialize(raw)
        except Exception:
            log.warn("mempool transaction {txid} does not parse; ignored", txid=txid[::-1].hex())
            return
        self.txs[txid] = tx
        self.raws[txid] = raw
        for txin in tx.vin:
            self.spends[OutPoint(bytes(txin.prevout.hash), txin.prevout.n)] = txid

    def _remove(self, txid: bytes) -> None:
        tx = self.txs.pop(txid)
        self.raws.pop(txid, None)
        for txin in tx.vin:
            point = OutPoint(bytes(txin.prevout.hash), txin.prevout.n)
            if self.spends.get(point) == txid:
                del self.spends[point]

    def spender_of(self, point: OutPoint) -> Optional[bytes]:
        return self.spends.get(point)

    def outputs_paying(self, script_pubkey: bytes) -> list[Utxo]:
        found = []
        for txid, tx in self.txs.items():
            for index, txout in enumerate(tx.vout):
                if bytes(txout.scriptPubKey) == script_pubkey:
                    found.append(Utxo(OutPoint(txid, index), txout.nValue, script_pubkey, None))
        return found
