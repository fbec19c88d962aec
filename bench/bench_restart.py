"""
Restarting a server with many stored channels: the time to load them and re-arm every timer
and watch, and the memory they take.

    python bench/bench_restart.py [--channels 10000]

Stores N open server channels (SQLite, as the server keeps them), then measures a restart:
``ServerChannelManager.start()`` on the embedded regtest chain (rebroadcast of each contract, which the
node refuses here since their coins are made up; a settle-before-expiry timer and a watch on the
contract's coins per channel). Target: under 5 seconds for 10,000 channels.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted.internet import defer, task  # noqa: E402


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def main(reactor, n: int) -> None:
    from bitcoin.core import COutPoint, CMutableTransaction, CMutableTxIn, CMutableTxOut, CScript

    from twisted_paychan.bitcoin.keys import KeySigner
    from twisted_paychan.bitcoin.scripts import ChannelScript
    from twisted_paychan.chain.embedded.chain import EmbeddedChain
    from twisted_paychan.channel.settings import ServerSettings
    from twisted_paychan.net.server_manager import ServerChannelManager
    from twisted_paychan.channel.records import ServerChannelRecord
    from twisted_paychan.store.sqlite import open_store
    from twisted_paychan.wallet.memory import MemoryWallet

    tmp = Path(tempfile.mkdtemp(prefix="paychan-restart-"))
    now = int(reactor.seconds())
    client, server = KeySigner.generate(), KeySigner.generate()
    script = ChannelScript(2, client.public_key, server.public_key, now + 86400)
    store = open_store(str(tmp / "server"))
    t = time.perf_counter()
    for i in range(n):
        tx = CMutableTransaction(
            [CMutableTxIn(COutPoint(i.to_bytes(32, "little"), 0))],
            [CMutableTxOut(1_000_000, CScript(script.script_pubkey))],
        )
        raw = tx.serialize()
        await store.add_server_channel(ServerChannelRecord(
            contract_txid=tx.GetTxid(), version=2, contract=raw, value=1_000_000, expiry=now + 86400,
            server_key=server.public_key, client_key=client.public_key, best_value=5000,
            best_signature=b"\x30" * 72, created_at=now, updated_at=now,
        ))
    print(f"stored {n} channels in {time.perf_counter() - t:.1f} s")
    await store.close()

    before = rss()
    t = time.perf_counter()
    store = open_store(str(tmp / "server"), reactor)
    chain = EmbeddedChain.open(tmp / "chain", reactor)
    channels = ServerChannelManager(MemoryWallet(chain), chain, store, ServerSettings(fee_rate=1000), reactor)
    await channels.start()
    elapsed = time.perf_counter() - t
    after = rss()
    print(f"restart with {n} stored channels: {elapsed:.2f} s to load and re-arm "
          f"({sum(len(c.timers) for c in channels._channels.values())} timers, "
          f"{sum(len(c.watches) for c in channels._channels.values())} kinds of watch)")
    print(f"memory: +{(after - before) / 2**20:.1f} MiB, {(after - before) / n / 1024:.2f} KiB per channel")
    channels.stop()
    await store.close()
    chain.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=10_000)
    args = p.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args.channels)))
