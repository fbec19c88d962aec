"""
What an abandoned handshake costs the server (issue #14 item 2): memory, wallet keys and wallet
file bytes left behind once the connection is gone, and the time one takes.

    python bench/bench_handshakes.py [--handshakes 10000]

Each handshake goes through the TCP factory's protocol on an in-memory transport: CLIENT_VERSION
v2 in, SERVER_VERSION and INITIATE (with a channel key) out, then the client goes away. The
server runs as ``twistd paychan`` does: logging begun (to no observer here), so log events do
not pile up in Twisted's start-up buffer; an SQLite wallet; the per-address rate limit off.
Before the fix each one left a stored key: about 1.1 KiB of memory and 0.15 KiB of wallet file.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted.internet import task  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402


def run(n: int) -> dict[str, float]:
    from twisted_paychan.chain.memory import MemoryChain
    from twisted_paychan.channel.settings import ServerSettings
    from twisted_paychan.net.server import PaymentChannelServerFactory
    from twisted_paychan.store.memory import MemoryChannelStore
    from twisted_paychan.wallet.keys import KeyPurpose
    from twisted_paychan.wallet.sqlite import SqliteWallet
    from twisted_paychan.wire import messages as m
    from twisted_paychan.wire.framing import encode_frame

    hello = encode_frame(m.client_version(2))
    clock = task.Clock()
    with tempfile.TemporaryDirectory() as tmp:
        chain = MemoryChain(clock)
        path = Path(tmp) / "wallet.sqlite"
        wallet = SqliteWallet.open(path, chain)
        factory = PaymentChannelServerFactory(wallet, chain, MemoryChannelStore(),
                                              ServerSettings(max_handshakes_per_address=0), clock)

        def wallet_bytes() -> int:
            return sum(p.stat().st_size for p in Path(tmp).glob("wallet.sqlite*"))

        def abandon(count: int) -> None:
            for i in range(count):
                proto = factory.buildProtocol(IPv4Address("TCP", f"10.0.{i % 250}.1", 40000))
                assert proto is not None
                transport = StringTransport()
                proto.makeConnection(transport)
                proto.dataReceived(hello)
                assert transport.value()
                proto.connectionLost()

        abandon(min(200, n))  # warm-up
        gc.collect()
        keys, size = len(wallet.public_keys(KeyPurpose.CHANNEL)), wallet_bytes()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        start = time.perf_counter()
        abandon(n)
        elapsed = time.perf_counter() - start
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        figures = {
            "handshakes": n,
            "bytes_per_handshake": grown / n,
            "keys_left": len(wallet.public_keys(KeyPurpose.CHANNEL)) - keys,
            "provisional_left": wallet.provisional_count(),
            "wallet_bytes_grown": wallet_bytes() - size,
            "per_connection_state": len(factory.manager._channels) + len(factory.limits.open),
            "us_per_handshake": elapsed / n * 1e6,
        }
        factory.stopFactory()
        wallet.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=10_000)
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    figures = run(args.handshakes)
    for name, value in figures.items():
        print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
