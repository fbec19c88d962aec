"""
CPU per payment on the hot path, server side and client side, in one process.

A :class:`ServerChannel` and a :class:`ClientChannel` on in-memory stores, wallets and chain,
joined by two message queues: every message goes through the real protobuf codec
(``encode_message`` by the sender, ``decode_message`` by the receiver), but no socket, no frame
and no reactor, so what is measured is what the channel code itself costs per payment: the
sans-IO machines, the effect runners, the Deferred plumbing, the codec, and the unavoidable
libsecp256k1 sign (client) and verify (server).

After one channel is opened (version 1, then version 2), N payments of 1 sat are made one after
the other. The time of each call into a side (``pay`` and the delivery of PAYMENT_ACK for the
client, the delivery of UPDATE_PAYMENT for the server: the in-memory stores complete at once,
so the store completions run inside those calls) is added to that side's account. The payments
are timed in chunks of a thousand; each figure is the best chunk of all rounds (the one least
disturbed by other processes on the machine), with the median chunk beside it.

    .venv/bin/python bench/bench_hotpath.py [--payments N] [--rounds R] [--profile] [--api]

``--api`` measures, in alternation, a second server with the HTTP API's hooks attached as
``twistd paychan`` attaches them (``api.metrics.ServerMetrics`` as the manager's observer, it and
the event replay buffer as subscribers), and prints both.

``--profile`` runs one more round under cProfile and prints the functions costing the most.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import gc
import hashlib
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import task  # noqa: E402

from twisted_paychan.chain.memory import MemoryChain  # noqa: E402
from twisted_paychan.channel.errors import CloseReason  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector  # noqa: E402
from twisted_paychan.net.client_channel import ClientChannel  # noqa: E402
from twisted_paychan.net.server_channel import NullServerHandler  # noqa: E402
from twisted_paychan.net.server_manager import ServerChannelManager  # noqa: E402
from twisted_paychan.store.memory import MemoryChannelStore  # noqa: E402
from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script  # noqa: E402
from twisted_paychan.wallet.memory import MemoryWallet  # noqa: E402
from twisted_paychan.wire.messages import decode_message, encode_message  # noqa: E402

START = 1_700_000_000
SERVER_ID = hashlib.sha256(b"bench hotpath server").digest()
VERSIONS = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}


def _fired(d: Any) -> Any:
    out: list = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class Link:
    """One server channel and one client channel, with a clock for each side's CPU."""

    def __init__(self, version: int, channel_value: int, api: bool = False) -> None:
        self.clock = task.Clock()
        self.clock.advance(START)
        chain = MemoryChain(self.clock)
        server_wallet, client_wallet = MemoryWallet(chain), MemoryWallet(chain)
        address = _fired(client_wallet.new_address())
        chain.credit(address_to_script(address, REGTEST), 10 * channel_value)
        chain.mine(1)
        settings = ServerSettings(fee_rate=1000)
        manager = ServerChannelManager(server_wallet, chain, MemoryChannelStore(), settings, self.clock)
        if api:
            from twisted_paychan.api.events import EventLog
            from twisted_paychan.api.metrics import ServerMetrics

            metrics = ServerMetrics()
            manager.observer = metrics
            manager.subscribe(metrics.event)
            manager.subscribe(EventLog(self.clock).publish)
        self.to_server: collections.deque[bytes] = collections.deque()
        self.to_client: collections.deque[bytes] = collections.deque()
        self.server = manager.connection(NullServerHandler(), self._to_client, self._closed)
        self.client = ClientChannel(
            client_wallet, MemoryChannelStore(),
            ClientSettings(channel_value=channel_value, versions=VERSIONS[version], fee_rate=1000),
            SERVER_ID, _fired(client_wallet.new_channel_key()), self._to_server, self._closed, self.clock,
        )
        self.server_seconds = 0.0
        self.client_seconds = 0.0

    def _to_server(self, message: Any) -> None:
        self.to_server.append(encode_message(message))

    def _to_client(self, message: Any) -> None:
        self.to_client.append(encode_message(message))

    def _closed(self, reason: CloseReason) -> None:
        raise AssertionError(f"a side closed during the benchmark: {reason.name}")

    def pump(self) -> None:
        """Deliver until both queues are empty, each delivery on the receiving side's account."""
        clock = time.perf_counter
        while self.to_server or self.to_client:
            if self.to_server:
                t = clock()
                self.server.message_received(decode_message(self.to_server.popleft()))
                self.server_seconds += clock() - t
            if self.to_client:
                t = clock()
                self.client.message_received(decode_message(self.to_client.popleft()))
                self.client_seconds += clock() - t

    def open(self) -> None:
        self.client.start()
        self.pump()
        assert _fired(self.client.opened).contract_txid

    def pay(self, count: int) -> tuple[float, float, float]:
        """``count`` payments of 1 sat; (total, server, client) seconds per payment."""
        self.server_seconds = self.client_seconds = 0.0
        clock = time.perf_counter
        acks: list = []
        start = clock()
        for _ in range(count):
            t = clock()
            d = self.client.pay(1)
            d.addCallback(acks.append)
            self.client_seconds += clock() - t
            self.pump()
        total = clock() - start
        assert len(acks) == count and acks[-1].amount == 1, "not every payment was acknowledged"
        return total / count, self.server_seconds / count, self.client_seconds / count

    def pay_in_chunks(self, count: int, chunk: int = 1000) -> list[tuple[float, float, float]]:
        gc.collect()
        return [self.pay(min(chunk, count - done)) for done in range(0, count, chunk)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one more round with cProfile")
    parser.add_argument("--api", action="store_true", help="also measure a server with the API's hooks, in alternation")
    args = parser.parse_args()
    if args.api:
        compare_api(args)
        return
    print(f"Python {sys.version.split()[0]}; {args.rounds} rounds of {args.payments} payments of 1 sat")
    value = 1_000_000 + (args.rounds + 1) * args.payments
    for version in (1, 2):
        link = Link(version, value)
        link.open()
        link.pay(1000)  # warm caches (parsed keys, scripts)
        runs = [chunk for _ in range(args.rounds) for chunk in link.pay_in_chunks(args.payments)]
        print(f"\nv{version}, µs per payment: best chunk (median chunk)")
        for i, label in enumerate(("total (both sides + codec + pump)", "server side", "client side")):
            figures = [r[i] * 1e6 for r in runs]
            print(f"  {label:<36} {min(figures):7.1f}   ({statistics.median(figures):.1f})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(link.pay, args.payments)
            print(f"\nv{version} profile of {args.payments} payments (tottime, top 30)")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def compare_api(args: argparse.Namespace) -> None:
    """The server side without and with the API's hooks, chunks taken in alternation."""
    print(f"Python {sys.version.split()[0]}; {args.rounds} rounds of {args.payments} payments of 1 sat, "
          "API hooks off and on in alternation")
    value = 1_000_000 + (args.rounds + 1) * args.payments
    for version in (1, 2):
        links = {False: Link(version, value), True: Link(version, value, api=True)}
        runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for link in links.values():
            link.open()
            link.pay(1000)
        for _ in range(args.rounds):
            for done in range(0, args.payments, 1000):
                for api, link in links.items():
                    runs[api].append(link.pay(min(1000, args.payments - done)))
        print(f"\nv{version}, server side, µs per payment: best chunk (median chunk)")
        for api in (False, True):
            figures = [r[1] * 1e6 for r in runs[api]]
            print(f"  API hooks {'on ' if api else 'off'}  {min(figures):7.1f}   ({statistics.median(figures):.1f})")


if __name__ == "__main__":
    main()
