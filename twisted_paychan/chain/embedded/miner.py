"""
Valid regtest blocks, built in Python for the kernel to judge.

What a regtest block needs to pass Bitcoin Core's checks: version 0x20000000 (BIP9 bits; BIP34,
BIP65, BIP66 and CSV are active from height 1 on regtest), ``nBits`` 0x207fffff and a nonce
ground until the header hash is below that target (about two tries), a coinbase whose scriptSig
starts with the height (BIP34) and is 2 to 100 bytes long, pays at most subsidy plus fees, and a
witness commitment (BIP141: the coinbase witness is a 32-byte reserved value, and an OP_RETURN
output commits to the witness merkle root with it). Consensus needs it only when a transaction
carries a witness; Core's miner always adds it, and so do we, so that blocks look like Core's
(``getblock``'s ``coinbase_tx`` has its ``witness``).
The timestamp must exceed the median-time-past of the last 11 blocks; the node chooses it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Sequence

from bitcoin.core import (
    COutPoint,
    CTransaction,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
)
from bitcoin.core.script import OP_RETURN, CScript, CScriptWitness
from bitcoin.core.serialize import Hash as sha256d
from bitcoin.core.serialize import VarIntSerializer

#: Version with the BIP9 top bits and no deployment signalled, as Core's miner writes it.
BLOCK_VERSION = 0x20000000
#: Regtest's proof-of-work limit in compact form: nearly every other hash meets it.
REGTEST_BITS = 0x207FFFFF
_TARGET = 0x7FFFFF << (8 * (0x20 - 3))
#: Regtest halves the subsidy every 150 blocks (mainnet: 210,000).
REGTEST_HALVING_INTERVAL = 150
COIN = 100_000_000
#: Consensus block weight limit, minus room for the coinbase.
MAX_BLOCK_WEIGHT = 4_000_000
COINBASE_WEIGHT_RESERVE = 4_000
_WITNESS_MAGIC = bytes.fromhex("aa21a9ed")
_WITNESS_RESERVED_VALUE = b"\x00" * 32



def block_subsidy(height: int) -> int:
    halvings = height // REGTEST_HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def _coinbase(height: int, script_pubkey: bytes, value: int, tag: bytes, commitment: bytes | None) -> CTransaction:
    # The second push keeps the scriptSig at least 2 bytes at heights 1-16 (a one-byte OP_n).
    script_sig = CScript([height, tag[:90] or b"\x00"])
    outputs = [CTxOut(value, CScript(script_pubkey))]
    witness = CTxWitness()
    if commitment is not None:
        outputs.append(CTxOut(0, CScript([OP_RETURN, _WITNESS_MAGIC + commitment])))
        witness = CTxWitness([CTxInWitness(CScriptWitness([_WITNESS_RESERVED_VALUE]))])
    # As Core's miner since 30 (bitcoin/bitcoin#32155, for the Consensus Cleanup): version 2,
    # locked to the previous height, with a sequence that leaves the lock time enabled.
    return CTransaction([CTxIn(COutPoint(), script_sig, 0xFFFFFFFE)], outputs, max(height - 1, 0), 2, witness)


@dataclass(frozen=True)
class MinedBlock:
    block_hash: bytes
    raw: bytes


def _merkle_root(hashes: list[bytes]) -> bytes:
    while len(hashes) > 1:
        if len(hashes) % 2:
            hashes.append(hashes[-1])
        hashes = [sha256d(hashes[i] + hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _has_witness(raw_tx: bytes) -> bool:
    return raw_tx[4:6] == b"\x00\x01"


def build_block(
    prev_hash: bytes,
    height: int,
    time: int,
    coinbase_script: bytes,
    txs: Sequence[bytes],
    fees: int,
    tag: bytes = b"twisted-paychan",
    txids: Optional[Sequence[bytes]] = None,
) -> MinedBlock:
    """A block on ``prev_hash`` at ``height`` holding the serialized ``txs`` (already in a
    valid order; ``txids`` if the caller knows them), its coinbase paying subsidy plus ``fees``
    to ``coinbase_script``; the nonce is ground. Works on bytes: python-bitcoinlib's CBlock
    would rebuild both merkle trees by re-serializing every transaction."""
    if txids is None:
        txids = [CTransaction.deserialize(raw).GetTxid() if _has_witness(raw) else sha256d(raw) for raw in txs]
    value = block_subsidy(height) + fees
    # wtxids (a transaction without a witness: its txid); the coinbase's counts as zero.
    root = _merkle_root([b"\x00" * 32, *(sha256d(raw) for raw in txs)])
    commitment = sha256d(root + _WITNESS_RESERVED_VALUE)
    coinbase = _coinbase(height, coinbase_script, value, tag, commitment)
    merkle_root = _merkle_root([coinbase.GetTxid(), *txids])
    prefix = struct.pack("<i", BLOCK_VERSION) + prev_hash + merkle_root + struct.pack("<II", time, REGTEST_BITS)
    nonce = 0
    while True:
        header = prefix + struct.pack("<I", nonce)
        block_hash = sha256d(header)
        if int.from_bytes(block_hash, "little") < _TARGET:
            break
        nonce += 1
    body = VarIntSerializer.serialize(len(txs) + 1) + coinbase.serialize() + b"".join(txs)
    return MinedBlock(block_hash, header + body)
