"""
Channel opens/s with many channels open, against opens/s with few (issue #21), in one process.

A :class:`ServerChannelManager` on the embedded chain (the real node: kernel, mempool, index,
spend watches) and a SQLite channel store, and clients joined to it by message queues (every
message through the real protobuf codec, no socket), all on one clock. Each open is a full
opening (handshake, contract, initial payment) and one payment; the channel then stays OPEN,
its connection gone, with its timers and watches, as a paying customer's does between visits.
No block is mined while channels open, so every contract also stays in the node's mempool.

    .venv/bin/python bench/bench_opens.py [--few 100] [--many 10000] [--batch 100] [--runs 5]

Opens/s is CPU time (``time.process_time``) for ``--batch`` opens, measured ``--runs`` times
with ``--few`` channels open and again with ``--many`` open; printed as min/median/max and the
ratio of the medians. What is measured is the server's code and the node's; the clients'
wallets are in-memory ones, a new one every ``--batch`` opens, so that a client wallet holding
ever more coins (its refresh is the wallet's business, not the server's) does not hide the
server's figure. ``task.Clock`` re-sorts all its calls on every ``callLater``, which with tens
of thousands of channel timers would be most of the measurement: the clock here keeps its
calls on a heap instead, as the reactor does. ``--profile`` prints where one
more batch, after them, went.
"""

from __future__ import annotations

import argparse
import heapq
import cProfile
import hashlib
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import task  # noqa: E402
from twisted.internet.base import DelayedCall  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script  # noqa: E402
from twisted_paychan.chain.embedded.chain import EmbeddedChain  # noqa: E402
from twisted_paychan.channel.errors import CloseReason  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector  # noqa: E402
from twisted_paychan.net.client_manager import ClientChannelManager  # noqa: E402
from twisted_paychan.net.server_channel import NullServerHandler  # noqa: E402
from twisted_paychan.net.server_manager import ServerChannelManager  # noqa: E402
from twisted_paychan.store.memory import MemoryChannelStore  # noqa: E402
from twisted_paychan.store.sqlite import SqliteChannelStore  # noqa: E402
from twisted_paychan.wallet.memory import MemoryWallet  # noqa: E402
from twisted_paychan.wire.messages import decode_message, encode_message  # noqa: E402

SERVER_ID = hashlib.sha256(b"bench-opens").digest()
SETTINGS = ClientSettings(channel_value=100_000, versions=VersionSelector.VERSION_2, fee_rate=1000)


class HeapClock(task.Clock):
    """A ``task.Clock`` on a heap, as the reactor keeps its calls: ``callLater`` and running a
    call cost O(log n) whatever the number of timers armed (``task.Clock`` re-sorts its list on
    every call, and a list's pop from the front moves every other call). A cancelled call
    stays in the heap until most of it is cancelled calls; a call moved later goes back in."""

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._serial = 0
        self._cancellations = 0

    def callLater(self, delay: float, f: Callable[..., object], *args: object, **kw: object) -> DelayedCall:
        call = DelayedCall(self.seconds() + delay, f, args, kw, self._cancelled, lambda c: None, self.seconds)
        self._push(call)
        return call

    def _cancelled(self, call: DelayedCall) -> None:
        # As the reactor does: once most of the heap is cancelled calls, rebuild it without.
        self._cancellations += 1
        if self._cancellations > 50 and self._cancellations > len(self._heap) // 2:
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancellations = 0

    def _push(self, call: DelayedCall) -> None:
        self._serial += 1
        heapq.heappush(self._heap, (call.getTime(), self._serial, call))

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [c for _, _, c in self._heap if not (c.cancelled or c.called)]

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        heap = self._heap
        while heap and heap[0][0] <= self.rightNow:
            _, _, call = heapq.heappop(heap)
            if call.cancelled or call.called:
                continue
            if call.getTime() > self.rightNow:  # reset or delayed since it was pushed
                self._push(call)
                continue
            call.called = 1
            call.func(*call.args, **call.kw)


class Bench:
    def __init__(self, datadir: Path) -> None:
        self.clock = HeapClock()
        self.clock.advance(time.time())
        self.chain = EmbeddedChain.open(datadir / "chain", self.clock)
        self.server_store = SqliteChannelStore(str(datadir / "server.sqlite"), self.clock)
        self.server = ServerChannelManager(MemoryWallet(self.chain), self.chain, self.server_store,
                                           ServerSettings(fee_rate=1000), self.clock)
        self.server.start()
        self._clients: list[tuple[MemoryWallet, Any]] = []
        self.serial = 0

    def fund_clients(self, count: int) -> None:
        """``count`` client wallets, each with a matured coinbase of its own."""
        for _ in range(count):
            wallet = MemoryWallet(self.chain)
            address = _now(wallet.new_address())
            self.chain.mine(1, address_to_script(address, REGTEST))
            self._clients.append((wallet, None))
        self.chain.mine(100)
        self.settle()

    def settle(self) -> None:
        for _ in range(50):
            self.clock.advance(0)
            self.clock.advance(0.01)  # the SQLite store's group commit

    def open_one(self, client: ClientChannelManager) -> None:
        to_server: list[bytes] = []
        to_client: list[bytes] = []
        closed: list[CloseReason] = []
        server = self.server.connection(NullServerHandler(), lambda m: to_client.append(encode_message(m)),
                                        closed.append)
        key = _now(client.wallet.new_channel_key())
        channel = client.new_connection(SETTINGS, SERVER_ID, key, lambda m: to_server.append(encode_message(m)),
                                        closed.append)
        channel.start()

        def pump(until: Callable[[], bool]) -> None:
            for _ in range(10_000):
                if until():
                    return
                if to_server:
                    server.message_received(decode_message(to_server.pop(0)))
                elif to_client:
                    channel.message_received(decode_message(to_client.pop(0)))
                else:
                    self.clock.advance(0.01)
            raise RuntimeError("the pair never finished")

        opened: list[Any] = []
        channel.opened.addBoth(opened.append)
        pump(lambda: bool(opened))
        paid: list[Any] = []
        channel.pay(1000).addBoth(paid.append)
        pump(lambda: bool(paid))
        if any(hasattr(r, "raiseException") for r in opened + paid):
            raise RuntimeError(f"an open failed: {opened + paid}")
        server.connection_lost()
        channel.connection_lost()
        self.clock.advance(0)

    def batch(self, count: int) -> float:
        """Opens/s (CPU) for ``count`` opens from one client wallet."""
        wallet = self._clients.pop()[0]
        client = ClientChannelManager(wallet, self.chain, MemoryChannelStore(), self.clock)
        start = time.process_time()
        for _ in range(count):
            self.open_one(client)
        return count / (time.process_time() - start)


def _now(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    return out[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--few", type=int, default=100)
    p.add_argument("--many", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    if args.few < 0 or args.many < args.few or args.batch < 1 or args.runs < 1:
        p.error("need 0 <= --few <= --many, --batch >= 1, --runs >= 1")
    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)
    bench = Bench(Path(tempfile.mkdtemp(prefix="paychan-opens-")))
    fill_batches = max(0, args.many - args.few) // args.batch + 2
    bench.fund_clients(2 * args.runs + 1 + fill_batches + (args.few // args.batch) + 2)
    print(f"twisted-paychan opens: {args.batch} opens a run, {args.runs} runs with {args.few} and with "
          f"{args.many} channels open (CPU time, one process); Python {sys.version.split()[0]}")

    def open_until(target: int) -> None:
        while len(bench.server._channels) < target:
            bench.batch(min(args.batch, target - len(bench.server._channels)))

    def runs(at: int) -> list[float]:
        rates = []
        for _ in range(args.runs):
            open_until(at)
            rates.append(bench.batch(args.batch))
        return rates

    few = runs(args.few)
    started = time.perf_counter()
    open_until(args.many)
    fill = time.perf_counter() - started
    many = runs(args.many)
    for label, rates in ((f"{args.few} open", few), (f"{args.many} open", many)):
        print(f"opens/s with {label:>12}: min {min(rates):7.1f}  median {statistics.median(rates):7.1f}  "
              f"max {max(rates):7.1f}")
    print(f"ratio of medians ({args.many} open / {args.few} open): "
          f"{statistics.median(many) / statistics.median(few):.2f}  "
          f"(filling took {fill:.0f} s; {len(bench.server._channels)} channels held, "
          f"{bench.chain._watchers.watching} spend watches, {len(bench.clock.getDelayedCalls())} timers)")
    if args.profile:  # one more batch, apart: the profiler's overhead is not in the figures
        profile = cProfile.Profile()
        profile.runcall(bench.batch, args.batch)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
