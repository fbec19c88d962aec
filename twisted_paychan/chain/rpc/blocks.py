"""
What the RPC chain follower needs from a raw block: each transaction's txid and bytes, and
which outpoints the block spends.

Blocks are fetched raw (``getblock <hash> 0``) and parsed here rather than as Core's verbose
JSON, which is several times larger on the wire and slower to decode. Only the transaction
list is read; the header comes from ``getblockheader``. This module imports no kernel, so the
RPC client runs without loading libbitcoinkernel.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from bitcoin.core import CTransaction
from bitcoin.core.serialize import Hash as sha256d
from bitcoin.core.serialize import VarIntSerializer

from twisted_paychan.chain.feed import FeedTx, feed_tx
from twisted_paychan.chain.types import OutPoint


@dataclass(frozen=True)
class BlockTxs:
    block_hash: bytes
    #: txid -> the transaction as serialized in the block (with witness).
    raws: dict[bytes, bytes]
    #: outpoint -> txid of the block's transaction spending it.
    spends: dict[OutPoint, bytes]
    #: The transactions in block order, as the transaction feed hands them over.
    txs: list[FeedTx]


def parse_block_txs(raw_block: bytes) -> BlockTxs:
    """Split a serialized block; ValueError if it is malformed."""
    if len(raw_block) < 81:
        raise ValueError("a block is at least 81 bytes")
    stream = io.BytesIO(raw_block)
    stream.seek(80)
    raws: dict[bytes, bytes] = {}
    spends: dict[OutPoint, bytes] = {}
    txs: list[FeedTx] = []
    try:
        count = VarIntSerializer.stream_deserialize(stream)
        for position in range(count):
            start = stream.tell()
            tx = CTransaction.stream_deserialize(stream)
            raw = raw_block[start : stream.tell()]
            txid = tx.GetTxid() if tx.has_witness() else sha256d(raw)
            raws[txid] = raw
            txs.append(feed_tx(txid, tx))
            if position:
                for txin in tx.vin:
                    spends[OutPoint(bytes(txin.prevout.hash), txin.prevout.n)] = txid
    except Exception as e:  # python-bitcoinlib raises several types on bad input
        raise ValueError(f"malformed block: {e}") from e
    return BlockTxs(sha256d(raw_block[:80]), raws, spends, txs)
