"""
What a block costs the server's wallet, however many coins it holds (issue #21).

A SqliteWallet follows an embedded regtest node (``wallet.follow``); it is given COINS coins
(fan-out transactions paying 1,000 of its payout scripts, as settlements over months would),
then BLOCKS blocks are mined, each with SETTLEMENTS transactions paying one more payout script.
For each block it prints, min/median/max over the blocks: the wallet's work (taking the block
from the transaction feed, writing its delta to SQLite), and the whole in-process time (the node
building and validating the block, then the wallet). Run it for two wallet sizes to see the
cost stay flat (the wallet used to rescan every script and rewrite every coin on each block).

    .venv/bin/python bench/bench_wallet_block.py [--coins 1000,100000] [--blocks 20] [--settlements 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from bitcoin.core import (  # noqa: E402
    COutPoint,
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    CTransaction,
    CTxInWitness,
    CTxWitness,
)
from bitcoin.core.script import CScript, CScriptWitness  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from twisted_paychan.chain.embedded.chain import EmbeddedChain  # noqa: E402
from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND, OP_TRUE_SCRIPT  # noqa: E402
from twisted_paychan.chain.types import OutPoint  # noqa: E402
from twisted_paychan.wallet.sqlite import SqliteWallet  # noqa: E402

FAN_OUT = 1000
COIN = 10_000
FEE = 50_000


def spend_anyone(point: OutPoint, value: int, outputs: list[tuple[bytes, int]]) -> bytes:
    """Spend an anyone-can-spend output into ``outputs`` plus the change back to anyone."""
    change = value - sum(v for _, v in outputs) - FEE
    tx = CMutableTransaction(
        [CMutableTxIn(COutPoint(point.txid, point.index))],
        [CMutableTxOut(v, CScript(s)) for s, v in outputs] + [CMutableTxOut(change, CScript(ANYONE_CAN_SPEND))],
    )
    tx.wit = CTxWitness([CTxInWitness(CScriptWitness([OP_TRUE_SCRIPT]))])
    return bytes(CTransaction.from_tx(tx).serialize())


def txid(raw: bytes) -> bytes:
    return bytes(CTransaction.deserialize(raw).GetTxid())


def mine_all(chain: EmbeddedChain, clock: Clock) -> None:
    while chain.node.mempool_entries():
        chain.mine(1)
        clock.advance(0)


def run(coins: int, blocks: int, settlements: int) -> tuple[list[float], list[float], float]:
    clock = Clock()
    clock.advance(time.time() - 7 * 86400)
    with tempfile.TemporaryDirectory(prefix="bench-wallet-") as datadir:
        chain = EmbeddedChain.open(Path(datadir) / "node", clock)
        wallet = SqliteWallet.open(Path(datadir) / "wallet.sqlite", chain)
        try:
            fan_outs = -(-coins // FAN_OUT)
            chain.mine(100 + fan_outs + 1)
            wallet.start()
            clock.advance(0)
            scripts = [wallet.settlement_payout_script(i.to_bytes(32, "big")).result for i in range(1, FAN_OUT + 1)]
            mature = sorted(
                (u for u in chain.node.unspent_outputs(ANYONE_CAN_SPEND) if u.coinbase),
                key=lambda u: u.height or 0,
            )
            # The coins the wallet holds, as months of settlements would leave them.
            t0 = time.perf_counter()
            for n in range(fan_outs):
                u = mature[n]
                chain.node.accept(spend_anyone(u.outpoint, u.value, [(s, COIN) for s in scripts]))
            mine_all(chain, clock)
            filling = time.perf_counter() - t0
            # Anyone-can-spend coins to pay the measured blocks' settlements from.
            u = mature[fan_outs]
            source = spend_anyone(u.outpoint, u.value, [(ANYONE_CAN_SPEND, 1_000_000)] * (blocks * settlements))
            chain.node.accept(source)
            mine_all(chain, clock)
            held = len(wallet._coins)
            assert held >= coins, (held, coins)

            wallet_ms, total_ms = [], []
            payers = [OutPoint(txid(source), i) for i in range(blocks * settlements)]
            extra = [wallet.settlement_payout_script((FAN_OUT + 1 + i).to_bytes(32, "big")).result
                     for i in range(blocks * settlements)]
            for b in range(blocks):
                for s in range(settlements):
                    i = b * settlements + s
                    chain.node.accept(spend_anyone(payers[i], 1_000_000, [(extra[i], 900_000)]))
                t0 = time.perf_counter()
                chain.mine(1)
                t1 = time.perf_counter()
                clock.advance(0)  # the feed delivers: the wallet takes the block in
                t2 = time.perf_counter()
                wallet_ms.append((t2 - t1) * 1e3)
                total_ms.append((t2 - t0) * 1e3)
            assert len(wallet._coins) == held + blocks * settlements
            assert wallet.scans == 1
        finally:
            wallet.close()
            chain.close()
    return wallet_ms, total_ms, filling


def spread(values: list[float]) -> str:
    return f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  max {max(values):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--coins", default="1000,100000", help="wallet sizes to measure, comma-separated")
    parser.add_argument("--blocks", type=int, default=20, help="blocks measured per size")
    parser.add_argument("--settlements", type=int, default=20, help="transactions paying the wallet per block")
    args = parser.parse_args()
    print(f"a block of {args.settlements} transactions paying the wallet, {args.blocks} blocks per size "
          "(embedded node, SqliteWallet, one process)")
    for coins in (int(c) for c in args.coins.split(",")):
        wallet_ms, total_ms, filling = run(coins, args.blocks, args.settlements)
        print(f"  {coins:>7} coins held (taken in over {filling:5.1f} s):")
        print(f"    wallet per block:              {spread(wallet_ms)}")
        print(f"    node + wallet per block:       {spread(total_ms)}")


if __name__ == "__main__":
    main()
