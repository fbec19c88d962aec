"""
A server that runs for months (issue #21): rounds of full channel cycles against the real
``twistd paychan`` on the embedded chain, and what each round costs compared with the first.

    python bench/bench_months.py [--rounds 20] [--channels 1000] [--blocks 6] [--concurrency 8]
                                 [--open-many 10000] [--open-batch 100]

Each cycle opens a channel, pays three times and closes it from the client (the server settles);
``--blocks`` blocks are mined between rounds. Printed per round: full cycles/s and its ratio to
round 1, the server's CPU per cycle (from the scheduler; the client's wallet, which this
benchmark also runs, slows the wall-clock rate as it grows), the server's RSS, and how long a handshake sent right after the round's first block
(the one confirming its settlements) waits for SERVER_VERSION: the server's busy time per block.
Then RSS growth per settled channel after round 2, the RPC calls per block against the node's
RPC server by method (made by this process's ``RpcChain`` and ``SqliteWallet``, an RpcChain
user like a server on Bitcoin Core), and channel opens/s with ``--open-many`` channels open
divided by opens/s with ``--open-batch`` open. ``PAYCHAN_PROFILE=FILE`` runs the server under
cProfile. Figures: ``doc/performance.md``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from twisted.internet import defer, task  # noqa: E402

from bench_payments import cpu_ns, free_port, rss_bytes, start_server, wait_started  # noqa: E402


def handshake_latency(port: int) -> float:
    """Seconds from CLIENT_VERSION sent to SERVER_VERSION's frame received (blocking: nothing
    else of this process needs to run meanwhile)."""
    from twisted_paychan.wire import messages as m
    from twisted_paychan.wire.framing import encode_frame

    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        s.sendall(encode_frame(m.client_version(2)))
        got = b""
        while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return time.perf_counter() - start


class CountingCalls:
    """Counts the JSON-RPC methods an RpcConnection sends (calls and batched calls)."""

    def __init__(self, connection) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        call, batch = connection.call, connection.batch

        def counted_call(method, *params, **kw):
            self.counts[method] += 1
            return call(method, *params, **kw)

        def counted_batch(calls, *a, **kw):
            for method, _ in calls:
                self.counts[method] += 1
            return batch(calls, *a, **kw)

        connection.call, connection.batch = counted_call, counted_batch


async def main(reactor, args) -> None:
    from twisted.internet.endpoints import clientFromString

    from twisted_paychan.chain.rpc.chain import RpcChain
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector
    from twisted_paychan.net.client import connect
    from twisted_paychan.store.sqlite import SqliteChannelStore
    from twisted_paychan.wallet.sqlite import SqliteWallet

    tmp = Path(tempfile.mkdtemp(prefix="paychan-months-"))
    port, rpc_port = free_port(), free_port()
    server = start_server(tmp, f"tcp:{port}:interface=127.0.0.1", rpc_port)
    try:
        cookie = await wait_started(reactor, tmp, port)
        chain = RpcChain.from_url(reactor, f"http://127.0.0.1:{rpc_port}", cookie_path=cookie, poll_interval=1.0)
        calls = CountingCalls(chain.connection)
        await chain.start()
        wallet = SqliteWallet.open(tmp / "client-wallet.sqlite", chain)
        store = SqliteChannelStore(str(tmp / "client-channels.sqlite"), reactor)
        # One coinbase per concurrent opener: each opener spends its own chain of change.
        for _ in range(args.concurrency):
            await chain.connection.call("generatetoaddress", 1, await wallet.new_address())
        spare = await wallet.new_address()
        await chain.connection.call("generatetoaddress", 100, spare)
        await task.deferLater(reactor, 1.5, lambda: None)
        endpoint = clientFromString(reactor, f"tcp:127.0.0.1:{port}")
        settings = ClientSettings(channel_value=100_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        serial = iter(range(10**9))

        failures = collections.Counter()

        async def open_channel():
            from twisted_paychan.channel.errors import ChannelClosed

            for attempt in range(3):  # on a loaded machine a handshake may time out; counted
                try:
                    return await connect(reactor, endpoint, wallet, chain, store, settings,
                                         hashlib.sha256(b"months %d" % next(serial)).digest(), None)
                except ChannelClosed as e:
                    failures[str(e)] += 1
                    if attempt == 2:
                        raise

        async def cycle() -> None:
            conn = await open_channel()
            for _ in range(3):
                await conn.pay(1000)
            await conn.settle()

        async def many(count: int, what) -> float:
            """Run ``what`` ``count`` times, ``--concurrency`` at a time; the seconds it took."""
            todo = iter(range(count))

            async def worker() -> None:
                for _ in todo:
                    await what()

            start = time.perf_counter()
            await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(args.concurrency)])
            return time.perf_counter() - start

        print(f"twisted-paychan months: {args.rounds} rounds of {args.channels} cycles (open, 3 payments, close), "
              f"{args.blocks} block(s) between rounds, {args.concurrency} at a time; Python {sys.version.split()[0]}")
        rates, rss, busy = [], [], []
        per_block: collections.Counter[str] = collections.Counter()
        blocks_counted = 0
        server_cpu = []
        for number in range(1, args.rounds + 1):
            ns = cpu_ns(server.pid)
            cycle_calls = collections.Counter(calls.counts)
            elapsed = await many(args.channels, cycle)
            cycle_calls = collections.Counter(calls.counts) - cycle_calls
            server_cpu.append((cpu_ns(server.pid) - ns) / args.channels / 1e6)
            rates.append(args.channels / elapsed)
            await task.deferLater(reactor, 0.2, lambda: None)  # the last settlements reach the node
            before = collections.Counter(calls.counts)
            await chain.connection.call("generatetoaddress", 1, spare)
            busy.append(handshake_latency(port))
            for _ in range(args.blocks - 1):
                await chain.connection.call("generatetoaddress", 1, spare)
            await task.deferLater(reactor, 2.5, lambda: None)  # two polls of the client's RpcChain
            grown = collections.Counter(calls.counts)
            grown.subtract(before)
            grown["generatetoaddress"] -= args.blocks
            per_block.update(grown)
            blocks_counted += args.blocks
            rss.append(rss_bytes(server.pid))
            print(f"round {number:3d}: {rates[-1]:7.1f} cycles/s  ratio {rates[-1] / rates[0]:.2f}  "
                  f"server CPU {server_cpu[-1]:5.2f} ms/cycle (ratio {server_cpu[0] / server_cpu[-1]:.2f})  "
                  f"server RSS {rss[-1] / 2**20:6.1f} MiB  handshake after the block {busy[-1] * 1e3:7.1f} ms")
        print("RPC calls per cycle in the last round (this process's client, its wallet funding each contract; "
              "the node answering them is in the server's process): "
              + ", ".join(f"{m} {n / args.channels:.1f}" for m, n in sorted(cycle_calls.items())))
        if len(rss) > 2:
            settled = (len(rss) - 2) * args.channels
            print(f"RSS growth per settled channel after round 2: {(rss[-1] - rss[1]) / settled / 1024:.2f} KiB")
        print(f"cycles/s, last round / first: {rates[-1] / rates[0]:.2f}; server CPU per cycle, first / last: "
              f"{server_cpu[0] / server_cpu[-1]:.2f}; handshake after a block: "
              f"min {min(busy) * 1e3:.1f} ms, max {max(busy) * 1e3:.1f} ms")
        print("RPC calls per block (this process's RpcChain and wallet, polling every second): "
              + ", ".join(f"{m} {n / blocks_counted:.1f}" for m, n in sorted(per_block.items()) if n > 0))

        # -- opens/s with many channels open ---------------------------------------------------
        kept = []

        async def open_and_keep() -> None:
            conn = await open_channel()
            await conn.pay(1000)
            conn.disconnect()  # stays OPEN on the server, with its watches and timers
            kept.append(conn)

        await many(args.open_batch, open_and_keep)
        few = args.open_batch / await many(args.open_batch, open_and_keep)
        await many(max(0, args.open_many - 2 * args.open_batch), open_and_keep)
        lots = args.open_batch / await many(args.open_batch, open_and_keep)
        print(f"opens/s with {2 * args.open_batch} open: {few:.1f}; with {len(kept) - args.open_batch} open: "
              f"{lots:.1f}; ratio {lots / few:.2f}")
        if failures:
            print("handshakes retried: " + ", ".join(f"{why} x{n}" for why, n in failures.items()))
        await store.close()
        wallet.close()
        await chain.stop()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--channels", type=int, default=1000, help="cycles per round")
    p.add_argument("--blocks", type=int, default=6, help="blocks mined between rounds (at least 1)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--open-many", type=int, default=10_000)
    p.add_argument("--open-batch", type=int, default=100)
    args = p.parse_args()
    if args.blocks < 1 or args.rounds < 1 or args.channels < 1:
        p.error("--rounds, --channels and --blocks must be at least 1")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
