"""
What the RPC methods ask of the embedded node that ``RegtestNode`` does not answer in one call,
built only on its public API (``raw_transaction``, ``tx_status``, ``spender_of``,
``tip_at``, ``height``, ``median_time_past``):

* the output behind an outpoint, spent or not, with the height and coinbase flag of the
  transaction that created it (``getblock`` fees and prevouts);
* the coin behind an outpoint as ``gettxout`` sees it, with or without the mempool;
* ``testmempoolaccept``: the mempool's verdict on a transaction without adding it, using the
  same ``chain.embedded.rules`` the node's own ``accept`` uses.

Parsed transactions are cached by txid (a txid names one content forever), so a fan-out parent
of hundreds of outputs is parsed once, not once per spend.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from bitcoin.core import CTransaction

from twisted_paychan.chain.embedded import rules
from twisted_paychan.chain.embedded.node import RegtestNode
from twisted_paychan.chain.types import OutPoint, TxState, Utxo

_OP_RETURN = 0x6A


class NodeView:
    def __init__(self, node: RegtestNode, cache_size: int = 4096) -> None:
        self.node = node
        self._parsed: OrderedDict[bytes, CTransaction] = OrderedDict()
        self._cache_size = cache_size

    def transaction(self, txid: bytes) -> Optional[CTransaction]:
        """A transaction the node knows (mempool or active chain), parsed."""
        tx = self._parsed.get(txid)
        if tx is not None:
            self._parsed.move_to_end(txid)
            return tx
        raw = self.node.raw_transaction(txid)
        if raw is None:
            return None
        tx = CTransaction.deserialize(raw)
        self._parsed[txid] = tx
        if len(self._parsed) > self._cache_size:
            self._parsed.popitem(last=False)
        return tx

    def output(self, point: OutPoint) -> Optional[Utxo]:
        """The output ``point`` names, spent or not; height None if its transaction is in the
        mempool. None if no known transaction has it."""
        tx = self.transaction(point.txid)
        if tx is None or not 0 <= point.index < len(tx.vout):
            return None
        txout = tx.vout[point.index]
        height = self.node.tx_status(point.txid).block_height
        return Utxo(point, txout.nValue, bytes(txout.scriptPubKey), height, tx.is_coinbase())

    def coin(self, point: OutPoint, *, mempool_outputs: bool, mempool_spends: bool) -> Optional[Utxo]:
        """An unspent output. ``mempool_outputs``: outputs of mempool transactions count;
        ``mempool_spends``: an output a mempool transaction spends does not."""
        found = self.output(point)
        if found is None or found.script_pubkey[:1] == bytes([_OP_RETURN]):
            return None
        if found.height is None and not mempool_outputs:
            return None
        spender = self.node.spender_of(point)
        if spender is not None:
            if mempool_spends or self.node.tx_status(spender).state is TxState.CONFIRMED:
                return None
        return found

    def mempool_spender(self, point: OutPoint) -> Optional[bytes]:
        spender = self.node.spender_of(point)
        if spender is not None and self.node.tx_status(spender).state is TxState.MEMPOOL:
            return spender
        return None

    def input_value(self, tx: CTransaction) -> Optional[int]:
        """What the inputs of ``tx`` are worth, if every one is a known output."""
        total = 0
        for txin in tx.vin:
            found = self.output(OutPoint(bytes(txin.prevout.hash), txin.prevout.n))
            if found is None:
                return None
            total += found.value
        return total

    def test_accept(self, raw: bytes, tx: CTransaction) -> int:
        """The fee, if the node would accept ``tx`` now; BroadcastRejected with Core's reason
        otherwise. Nothing changes."""
        node = self.node

        def replace(conflicts: set[bytes], fee: int, vsize: int) -> None:
            node.replaced_by(tx.GetTxid(), tx, conflicts, fee, vsize)  # judged as Core would; nothing evicted

        return rules.check_acceptance(
            raw,
            tx,
            lambda p: self.coin(p, mempool_outputs=True, mempool_spends=False),
            self.mempool_spender,
            rules.NextBlock(node.height + 1, node.median_time_past()),
            lambda h: node.tip_at(h).median_time_past,
            replace,
        )
