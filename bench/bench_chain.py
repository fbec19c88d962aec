"""
How fast the embedded regtest node mines and accepts transactions.

Prints blocks mined per second (empty blocks, and blocks of 100 transactions) and the latency
of ``EmbeddedChain.broadcast`` (mempool acceptance: parsing, the mempool rules, Bitcoin Core's
script interpreter on each input), p50 and p99. Everything runs in one thread, synchronously,
on a temporary data directory with a ``task.Clock``.

    .venv/bin/python bench/bench_chain.py [--blocks 500] [--full-blocks 10]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import coincurve  # noqa: E402
from bitcoin.core import (  # noqa: E402
    COutPoint,
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    CTransaction,
    CTxInWitness,
    CTxWitness,
)
from bitcoin.core.script import (  # noqa: E402
    OP_0,
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcoin.core.serialize import Hash160  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from twisted_paychan.chain.embedded.chain import EmbeddedChain  # noqa: E402
from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND, OP_TRUE_SCRIPT  # noqa: E402

KEY = coincurve.PrivateKey(hashlib.sha256(b"bench key").digest())
PUB = KEY.public_key.format()
P2WPKH = bytes(CScript([OP_0, Hash160(PUB)]))
P2PKH = bytes(CScript([OP_DUP, OP_HASH160, Hash160(PUB), OP_EQUALVERIFY, OP_CHECKSIG]))
COIN_VALUE = 1_000_000
FEE = 1_000


def fan_out(coinbase_txid: bytes, value: int, count: int) -> bytes:
    """Spend an anyone-can-spend coinbase into ``count`` P2WPKH coins."""
    tx = CMutableTransaction(
        [CMutableTxIn(COutPoint(coinbase_txid, 0))],
        [CMutableTxOut(COIN_VALUE, CScript(P2WPKH)) for _ in range(count)]
        + [CMutableTxOut(value - count * COIN_VALUE - 100_000, CScript(ANYONE_CAN_SPEND))],
    )
    tx.wit = CTxWitness([CTxInWitness(CScriptWitness([OP_TRUE_SCRIPT]))])
    return CTransaction.from_tx(tx).serialize()


def p2wpkh_spend(txid: bytes, index: int) -> bytes:
    tx = CMutableTransaction([CMutableTxIn(COutPoint(txid, index))], [CMutableTxOut(COIN_VALUE - FEE, CScript(P2PKH))])
    code = CScript([OP_DUP, OP_HASH160, Hash160(PUB), OP_EQUALVERIFY, OP_CHECKSIG])
    digest = SignatureHash(code, tx, 0, SIGHASH_ALL, amount=COIN_VALUE, sigversion=SIGVERSION_WITNESS_V0)
    sig = KEY.sign(digest, hasher=None) + bytes([SIGHASH_ALL])
    tx.wit = CTxWitness([CTxInWitness(CScriptWitness([sig, PUB]))])
    return CTransaction.from_tx(tx).serialize()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--blocks", type=int, default=500, help="empty blocks to mine")
    parser.add_argument("--full-blocks", type=int, default=10, help="blocks of 100 transactions to mine")
    args = parser.parse_args()

    clock = Clock()
    clock.advance(1_700_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as datadir:
        chain = EmbeddedChain.open(datadir, clock)
        try:
            started = time.perf_counter()
            chain.mine(args.blocks)
            empty_rate = args.blocks / (time.perf_counter() - started)
            chain.mine(max(0, 101 - args.blocks))

            coinbase = [u for u in chain.node.unspent_outputs(ANYONE_CAN_SPEND) if u.height == 1][0]
            funding = fan_out(coinbase.outpoint.txid, coinbase.value, 100 * args.full_blocks)
            chain.node.accept(funding)
            chain.mine(1)
            funding_txid = CTransaction.deserialize(funding).GetTxid()
            spends = [p2wpkh_spend(funding_txid, i) for i in range(100 * args.full_blocks)]

            latencies: list[float] = []
            mining = 0.0
            for block in range(args.full_blocks):
                for raw in spends[block * 100 : (block + 1) * 100]:
                    t0 = time.perf_counter()
                    d = chain.broadcast(raw)
                    latencies.append(time.perf_counter() - t0)
                    d.addErrback(lambda f: sys.exit(f"broadcast refused: {f.value}"))
                t0 = time.perf_counter()
                chain.mine(1)
                mining += time.perf_counter() - t0
                assert not chain.node.mempool_entries()
        finally:
            chain.close()

    print(f"embedded regtest node (py-bitcoinkernel), {args.blocks} empty / {args.full_blocks} full blocks")
    print(f"  empty blocks mined:             {empty_rate:8.0f} blocks/s")
    print(f"  blocks of 100 P2WPKH spends:    {args.full_blocks / mining:8.1f} blocks/s")
    print(
        f"  broadcast latency (n={len(latencies)}):    "
        f"p50 {percentile(latencies, 50) * 1e3:.3f} ms, p99 {percentile(latencies, 99) * 1e3:.3f} ms, "
        f"mean {statistics.mean(latencies) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
