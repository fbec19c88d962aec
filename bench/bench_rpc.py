"""
Broadcast acceptance latency through JSON-RPC: ``sendrawtransaction`` round trips over HTTP on
loopback against the embedded regtest node's RPC server, in one process.

Prints p50/p99 of: a trivial call (``getblockcount``, the HTTP + JSON-RPC floor), a
``sendrawtransaction`` of a signed P2WPKH spend (mempool acceptance: parsing, Core's checks,
Bitcoin Core's script interpreter), and the same through ``RpcChain.broadcast``. One request
at a time, on a kept-alive connection; compare with bench/bench_chain.py (in-process).

    .venv/bin/python bench/bench_rpc.py [--txs 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bitcoin.core import CTransaction  # noqa: E402
from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

from bench_chain import fan_out, p2wpkh_spend, percentile  # noqa: E402
from twisted_paychan.chain.embedded.chain import EmbeddedChain  # noqa: E402
from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND  # noqa: E402
from twisted_paychan.chain.embedded.rpc.server import serve_node  # noqa: E402
from twisted_paychan.chain.rpc.chain import RpcChain  # noqa: E402
from twisted_paychan.rpc.connection import RpcConnection  # noqa: E402


def figures(name: str, samples: list[float]) -> str:
    return (
        f"  {name:<34} p50 {percentile(samples, 50) * 1e3:6.3f} ms   p99 {percentile(samples, 99) * 1e3:6.3f} ms"
        f"   ({len(samples) / sum(samples):6.0f}/s sequential, n={len(samples)})"
    )


async def run(reactor: Any, txs: int) -> None:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as datadir:
        chain = EmbeddedChain.open(datadir, clock)
        server = await serve_node(reactor, chain.node, "tcp:0:interface=127.0.0.1")
        connection = RpcConnection(reactor, server.url, cookie_path=Path(datadir) / ".cookie")
        rpc_chain = RpcChain(connection, clock)
        try:
            chain.mine(101)
            coinbase = [u for u in chain.node.unspent_outputs(ANYONE_CAN_SPEND) if u.height == 1][0]
            funding = fan_out(coinbase.outpoint.txid, coinbase.value, 2 * txs)
            chain.node.accept(funding)
            chain.mine(1)
            funding_txid = CTransaction.deserialize(funding).GetTxid()
            spends = [p2wpkh_spend(funding_txid, i) for i in range(2 * txs)]

            trivial: list[float] = []
            for _ in range(txs):
                t0 = time.perf_counter()
                await connection.call("getblockcount")
                trivial.append(time.perf_counter() - t0)

            raw_calls: list[float] = []
            for i, raw in enumerate(spends[:txs]):
                t0 = time.perf_counter()
                await connection.call("sendrawtransaction", raw.hex())
                raw_calls.append(time.perf_counter() - t0)
                if i % 500 == 499:
                    chain.mine(1)

            broadcasts: list[float] = []
            for i, raw in enumerate(spends[txs:]):
                t0 = time.perf_counter()
                await rpc_chain.broadcast(raw)
                broadcasts.append(time.perf_counter() - t0)
                if i % 500 == 499:
                    chain.mine(1)
        finally:
            await connection.close()
            await rpc_chain.stop()
            await server.stop()
            chain.close()

    print(f"JSON-RPC over HTTP on loopback to the embedded regtest node, {txs} requests each")
    print(figures("getblockcount round trip", trivial))
    print(figures("sendrawtransaction round trip", raw_calls))
    print(figures("RpcChain.broadcast", broadcasts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--txs", type=int, default=1000, help="transactions to broadcast (each way)")
    args = parser.parse_args()
    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor, args.txs)))


if __name__ == "__main__":
    main()
