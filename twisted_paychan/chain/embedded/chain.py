"""
``EmbeddedChain``: :class:`IChain` on the embedded regtest node, the project's default chain.

Answers are already-fired Deferreds (the node is in-process and synchronous); notifications are
delivered through the reactor by ``watchers``. The node itself stays reachable as
:attr:`EmbeddedChain.node` for what a JSON-RPC front end needs beyond IChain (blocks and headers
by hash or height, the mempool, UTXO scans, mining to a script).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND, RegtestNode
from twisted_paychan.chain.embedded.watchers import Watchers
from twisted_paychan.chain.interfaces import ICancellable, IChain
from twisted_paychan.chain.types import (
    BroadcastRejected,
    ChainTip,
    OutPoint,
    SpendEvent,
    TxStatus,
    Utxo,
)


@implementer(IChain)
class EmbeddedChain:
    def __init__(self, node: RegtestNode) -> None:
        self.node = node
        self._watchers = Watchers(node.reactor, node.spender_of, node.tx_status, node.raw_transaction)
        node.on_block(self._watchers.new_tip)
        node.on_touched(self._watchers.touched)

    @classmethod
    def open(
        cls,
        datadir: Union[str, Path],
        reactor: IReactorTime,
        coinbase_script: bytes = ANYONE_CAN_SPEND,
        mine_every: Optional[float] = None,
    ) -> "EmbeddedChain":
        """Open (or create) a node on ``datadir``; with ``mine_every``, mine a block every
        that many seconds of ``reactor``'s clock."""
        chain = cls(RegtestNode(datadir, reactor, coinbase_script))
        if mine_every is not None:
            chain.node.start_mining(mine_every)
        return chain

    def close(self) -> None:
        self.node.close()

    # -- IChain ----------------------------------------------------------------------------

    def broadcast(self, tx: bytes) -> "Deferred[bytes]":
        try:
            return succeed(self.node.accept(tx))
        except BroadcastRejected as e:
            return fail(e)

    def tx_status(self, txid: bytes) -> "Deferred[TxStatus]":
        return succeed(self.node.tx_status(txid))

    def get_transaction(self, txid: bytes) -> "Deferred[Optional[bytes]]":
        return succeed(self.node.raw_transaction(txid))

    def tip(self) -> "Deferred[ChainTip]":
        return succeed(self.node.tip())

    def unspent_outputs(self, script_pubkey: bytes) -> "Deferred[list[Utxo]]":
        return succeed(self.node.unspent_outputs(script_pubkey))

    def watch_spend(self, outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        return self._watchers.watch_spend(outpoint, callback)

    def watch_blocks(self, callback: Callable[[ChainTip], Any]) -> ICancellable:
        return self._watchers.watch_blocks(callback)

    # -- test and tool helpers -------------------------------------------------------------

    def mine(self, count: int = 1, script_pubkey: Optional[bytes] = None) -> list[bytes]:
        """Mine ``count`` blocks (the first takes the mempool); their hashes."""
        return self.node.generate(count, script_pubkey)
