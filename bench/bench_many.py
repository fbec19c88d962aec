"""
Many channels connected to one server at once (issue #12): how fast they open, and whether the
server keeps up when every one of them pays once a second.

    python bench/bench_many.py [--channels 10000] [--duration 60] [--generators 2]

Starts ``twistd paychan`` (the real server, embedded regtest chain, SQLite store, the
per-address limits off) and ``--generators`` load-generator processes (this script with
``--generator``), each with its own SQLite wallet and durable SQLite channel store, reaching the
server's chain over JSON-RPC. The open-files limit is raised to its hard limit for all of them.

Phase 1, opens: every generator opens its share of the channels as fast as it can (up to
``--open-concurrency`` handshakes in flight each); printed: channel opens per second over all.
Phase 2, payments: with every channel still connected, each pays 1 sat once a second (its own
phase within the second) for ``--duration`` seconds; printed: payments asked for, acknowledged,
skipped (the previous one not yet acknowledged when the next was due), latency p50/p99/max,
server CPU (scheduler) and RSS. By default each generator signs every payment its channels can
ask for before the clock starts (each its channel's own key over its own contract: the server
checks them like any other) and then only writes those frames and counts the acknowledgements:
ten thousand whole clients, each signing and storing its ``c`` once a second, cost about as
much CPU as this 2-core machine has, and a run of them measures the generators more than the server.
``--full-clients`` pays through the whole client (``pay()``) instead.

Throughout both, a liveness probe in this process opens a fresh connection every 0.25 s, sends
CLIENT_VERSION and times the server's answer up to its INITIATE (the whole handshake answer);
printed: the probe's p50/p99/max per phase and how many answers took more than 100 ms.

A small run finishes in well under a minute: ``--channels 200 --duration 5``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from twisted.internet import defer, protocol, task  # noqa: E402

from bench_payments import cpu_ns, free_port, rss_bytes, start_server, wait_started  # noqa: E402

CHANNEL_VALUE = 100_000


def raise_nofile() -> int:
    """Raise this process's open-files limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quantiles(samples: list[float]) -> str:
    if len(samples) < 2:
        return "n/a"
    s = sorted(samples)
    q = statistics.quantiles(s, n=100, method="inclusive")
    return f"p50 {q[49] * 1e3:.1f} ms, p99 {q[98] * 1e3:.1f} ms, max {s[-1] * 1e3:.1f} ms"


# -- the load generator -------------------------------------------------------------------------

async def generator(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory

    from twisted_paychan.chain.rpc.chain import RpcChain
    from twisted_paychan.channel.errors import ChannelClosed
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector
    from twisted_paychan.net.client import ClientChannelProtocol
    from twisted_paychan.net.client_manager import ClientChannelManager
    from twisted_paychan.store.sqlite import SqliteChannelStore
    from twisted_paychan.wallet.sqlite import SqliteWallet

    raise_nofile()
    tmp = Path(args.dir)
    # The channels' outputs are watched, but nothing spends them during a run: poll rarely.
    chain = RpcChain.from_url(reactor, args.rpc_url, cookie_path=Path(args.cookie), poll_interval=3600.0)
    await chain.start()
    wallet = SqliteWallet.open(tmp / "wallet.sqlite", chain)
    store = SqliteChannelStore(str(tmp / "channels.sqlite"), reactor)
    manager = ClientChannelManager(wallet, chain, store, reactor)
    await chain.connection.call("generatetoaddress", args.funding_blocks, await wallet.new_address())
    await chain.connection.call("generatetoaddress", 100, await wallet.new_address())
    await fan_out(chain, wallet, args.count)
    # The wallet refreshes its coins from the node before each fund(): a scantxoutset of the
    # generator's thousands of coins, by the node that lives in the server's process. That is
    # the node's work, not the channel server's: coins are read once, and each channel is
    # funded from them directly (the same selection and signing as fund()).
    await wallet.refresh()
    wallet._ensure_payout_key()
    wallet.fund = lambda script, amount, rate: defer.succeed(wallet._fund_now(script, amount, max(rate, 1000)))
    settings = ClientSettings(channel_value=CHANNEL_VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000,
                              handshake_timeout=600.0, reply_timeout=600.0)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port, timeout=600)
    server_id = hashlib.sha256(b"bench many").digest()
    # Channel keys made before the clock starts: each is a wallet commit in this process's
    # reactor thread, the client's cost, not the server's.
    keys = [await wallet.new_channel_key() for _ in range(args.count)]
    print("ready", flush=True)
    await _line(reactor)  # "open"

    async def open_one(n: int) -> Any:
        signer = keys[n]

        def make(send: Any, close: Any) -> Any:
            return manager.new_connection(settings, server_id, signer, send, close, None)

        proto = await endpoint.connect(Factory.forProtocol(lambda: ClientChannelProtocol(make, reactor, 600.0)))
        await proto.channel.opened
        return proto

    channels: list[Any] = []
    failed = 0
    start = time.perf_counter()
    todo = iter(range(args.count))

    async def opener() -> None:
        nonlocal failed
        for n in todo:
            try:
                channels.append(await open_one(n))
            except Exception as e:  # counted and reported; the bench goes on
                failed += 1
                if failed <= 3:
                    print(f"open failed: {e!r}", file=sys.stderr, flush=True)

    await defer.gatherResults([defer.ensureDeferred(opener()) for _ in range(args.open_concurrency)])
    print("opened " + json.dumps({"opened": len(channels), "failed": failed,
                                  "seconds": time.perf_counter() - start}), flush=True)
    if args.presigned:
        # Before the go-ahead, so none of it is timed: every payment the run can ask for.
        for proto in channels:
            presign(proto, int(args.duration) + 5)
    print("signed", flush=True)
    await _line(reactor)  # "pay"

    # Each channel pays once a second at its own offset; a tick every 10 ms pays those due.
    rng = random.Random(args.seed)
    slots: list[list[Any]] = [[] for _ in range(100)]
    for ch in channels:
        slots[rng.randrange(100)].append(ch)
    latencies: list[float] = []
    asked = acked = skipped = errors = 0
    busy: set[int] = set()

    def pay(proto: Any) -> None:
        nonlocal asked, skipped
        if args.presigned:
            return pay_presigned(proto)
        ch = proto.channel
        if id(ch) in busy or ch.close_reason is not None:
            skipped += 1
            return
        asked += 1
        busy.add(id(ch))
        sent = time.perf_counter()
        d = ch.pay(1)

        def done(_: Any) -> None:
            nonlocal acked
            acked += 1
            latencies.append(time.perf_counter() - sent)
            busy.discard(id(ch))

        def failed_(f: Any) -> None:
            nonlocal errors
            errors += 1
            busy.discard(id(ch))
            f.trap(ChannelClosed)

        d.addCallbacks(done, failed_)

    def pay_presigned(proto: Any) -> None:
        nonlocal asked, skipped
        if proto.sent_at or proto.transport is None or proto.transport.disconnected:
            skipped += 1
            return
        asked += 1
        proto.sent_at.append(time.perf_counter())
        proto.transport.write(next(proto.frames))

    def read_acks(proto: Any) -> Any:
        """Count PAYMENT_ACKs by their first two bytes (field 1, type 11) and time each against
        the oldest payment sent: the least work a client can do with an answer."""
        buf = bytearray()

        def received(data: bytes) -> None:
            nonlocal acked, errors
            buf.extend(data)
            while len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if len(buf) < 4 + size:
                    break
                kind = bytes(buf[4:6])
                del buf[:4 + size]
                if not proto.sent_at:
                    continue
                sent = proto.sent_at.popleft()
                if kind == b"\x08\x0b":
                    acked += 1
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1
        return received

    if args.presigned:
        for proto in channels:
            proto.dataReceived = read_acks(proto)

    began = reactor.seconds()
    ticks = [0]

    def tick() -> None:
        due = int((reactor.seconds() - began) * 100)
        while ticks[0] <= due:
            for ch in slots[ticks[0] % 100]:
                pay(ch)
            ticks[0] += 1

    loop = task.LoopingCall(tick)
    loop.clock = reactor
    loop.start(0.01)
    await task.deferLater(reactor, args.duration, lambda: None)
    loop.stop()
    deadline = reactor.seconds() + 30
    def waiting() -> int:
        return sum(len(p.sent_at) for p in channels) if args.presigned else len(busy)

    while waiting() and reactor.seconds() < deadline:  # the last ones' acks
        await task.deferLater(reactor, 0.05, lambda: None)
    # To a file: stdout is non-blocking under StandardIO, and a long line would be cut short.
    (tmp / "paid.json").write_text(json.dumps({"asked": asked, "acked": acked, "skipped": skipped, "errors": errors,
                                               "unanswered": waiting(), "latencies": latencies,
                                               "cpu_s": time.process_time()}))
    print("paid", flush=True)
    await _line(reactor)  # "exit"
    for proto in channels:
        proto.channel.disconnect()
    manager.stop()
    await store.close()
    wallet.close()
    await chain.stop()


def presign(proto: Any, count: int) -> None:
    """``count`` UPDATE_PAYMENT frames of 1 sat each for this connection's channel, signed by
    its own key over its own contract (the server checks them as any other), kept on the
    protocol for ``pay_presigned``. The client's store is not told: this load stands for many
    clients each paying at its own pace, and what it measures is the server."""
    from twisted_paychan.channel.transactions import sign_payment
    from twisted_paychan.wire import messages as m
    from twisted_paychan.wire.framing import encode_frame

    machine = proto.channel.machine
    record = machine.record
    change = record.client_change
    frames = []
    for _ in range(count):
        payment = sign_payment(machine._channel, record.contract_txid, change, 1, machine.signer)
        change = payment.client_change
        frames.append(encode_frame(m.update_payment(change, payment.signature, None)))
    proto.frames = iter(frames)
    proto.sent_at = collections.deque()


#: One coin per channel: the channel value, the contract's fee and a change above dust.
COIN_VALUE = CHANNEL_VALUE + 1000
FAN_OUT = 1000


async def fan_out(chain: Any, wallet: Any, count: int) -> None:
    """Split the generator's coinbases into ``count`` confirmed coins, one per channel, so that
    opens never wait for each other's change (a wallet funds from confirmed coins, or from its
    own change once the chain lists it, after the server broadcast the contract)."""
    from bitcoin.core import CScript, CTxOut

    from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
    from twisted_paychan.wallet.txbuild import FUNDING_TX_VERSION, SpendableCoin, _sign

    script = address_to_script(await wallet.new_address(), REGTEST)
    big = [u for u in await wallet.coins() if u.value > FAN_OUT * COIN_VALUE + 10**6]
    left = count
    for u in big:
        if left <= 0:
            break
        n = min(FAN_OUT, left)
        key = wallet._by_script[u.script_pubkey]  # a bench may reach into our own wallet
        coin = SpendableCoin(u, wallet._signers[key.public_key], key.script_type)
        fee = 40 * n + 1000  # 1000 sat/kvB: ~31 vB an output, with room
        outputs = [CTxOut(COIN_VALUE, CScript(script)) for _ in range(n)]
        outputs.append(CTxOut(u.value - n * COIN_VALUE - fee, CScript(script)))
        await chain.broadcast(_sign([coin], outputs, FUNDING_TX_VERSION).serialize())
        left -= n
    if left > 0:
        raise RuntimeError(f"not enough coins for {count} channels")
    await chain.connection.call("generatetoaddress", 1, await wallet.new_address())


_stdin_lines: Optional[Any] = None


def _line(reactor: Any) -> defer.Deferred[str]:
    """The next line on stdin (the coordinator's go-ahead), without blocking the reactor."""
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    global _stdin_lines
    if _stdin_lines is None:
        class Lines(LineReceiver):
            delimiter = b"\n"
            waiting: list[defer.Deferred[str]] = []

            def lineReceived(self, line: bytes) -> None:
                if self.waiting:
                    self.waiting.pop(0).callback(line.decode())

        _stdin_lines = Lines()
        stdio.StandardIO(_stdin_lines, reactor=reactor)
    d: defer.Deferred[str] = defer.Deferred()
    _stdin_lines.waiting.append(d)
    return d


# -- the coordinator ----------------------------------------------------------------------------

class Generator(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.lines: dict[str, defer.Deferred[str]] = {}
        self.buffer = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def expect(self, word: str) -> defer.Deferred[str]:
        d = self.lines.get(word)
        if d is None:
            d = self.lines[word] = defer.Deferred()
        return d

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            word, _, rest = line.decode().partition(" ")
            self.expect(word).callback(rest)

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode(errors="replace"))

    def say(self, word: str) -> None:
        assert self.transport is not None
        self.transport.write(word.encode() + b"\n")

    def processEnded(self, reason: Any) -> None:
        for word, d in self.lines.items():
            if not d.called:
                d.errback(RuntimeError(f"a generator ended before '{word}': {reason.value}"))
        self.ended.callback(None)


class Probe:
    """Every 0.25 s, a fresh connection's CLIENT_VERSION, timed to the server's INITIATE."""

    def __init__(self, reactor: Any, port: int) -> None:
        self.reactor = reactor
        self.port = port
        self.samples: list[float] = []
        self.failures = 0
        self.phase = "start"
        self.by_phase: dict[str, list[float]] = {}
        self.loop = task.LoopingCall(self.probe)
        self.loop.clock = reactor

    def probe(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._probe())

    async def _probe(self) -> None:
        from twisted_paychan.wire import messages as m
        from twisted_paychan.wire.framing import encode_frame
        from twisted_paychan.wire.messages import MessageType

        hello = encode_frame(m.client_version(2))
        phase = self.phase
        answered: defer.Deferred[None] = defer.Deferred()
        reactor = self.reactor

        class Handshake(protocol.Protocol):
            buf = b""

            def connectionMade(self) -> None:
                self.transport.write(hello)

            def dataReceived(self, data: bytes) -> None:
                self.buf += data
                while len(self.buf) >= 4:
                    size = int.from_bytes(self.buf[:4], "big")
                    if len(self.buf) < 4 + size:
                        return
                    body, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
                    msg = m.TwoWayChannelMessage()
                    msg.ParseFromString(body)
                    if msg.type == MessageType.INITIATE and not answered.called:
                        answered.callback(None)
                        self.transport.loseConnection()

            def connectionLost(self, reason: Any = None) -> None:
                if not answered.called:
                    answered.errback(RuntimeError("closed before INITIATE"))

        start = time.perf_counter()
        try:
            await protocol.ClientCreator(reactor, Handshake).connectTCP("127.0.0.1", self.port, timeout=5)
            timeout = reactor.callLater(5, lambda: answered.called or answered.errback(RuntimeError("timeout")))
            await answered
            if timeout.active():
                timeout.cancel()
            self.by_phase.setdefault(phase, []).append(time.perf_counter() - start)
        except Exception:
            self.failures += 1


async def coordinator(reactor: Any, args: argparse.Namespace) -> None:
    limit = raise_nofile()
    need = args.channels + 200
    if limit < need:
        sys.exit(f"the open-files limit is {limit}; {need} are needed for {args.channels} channels")
    tmp = Path(tempfile.mkdtemp(prefix="paychan-many-"))
    port, rpc_port = free_port(), free_port()
    server = start_server(tmp, f"tcp:{port}:interface=127.0.0.1:backlog=4096", rpc_port, "--handshake-timeout", "600",
                          preexec_fn=raise_nofile)
    gens: list[Generator] = []
    probe = Probe(reactor, port)
    try:
        cookie = await wait_started(reactor, tmp, port)
        share = [args.channels // args.generators + (1 if i < args.channels % args.generators else 0)
                 for i in range(args.generators)]
        funding_blocks = -(-max(share) // FAN_OUT) + 1  # a coinbase (>= 12.5 BTC here) per fan-out
        for i, count in enumerate(share):
            gen = Generator()
            gdir = tmp / f"generator{i}"
            gdir.mkdir()
            argv = [sys.executable, str(Path(__file__).resolve()), "--generator", "--dir", str(gdir),
                    "--port", str(port), "--rpc-url", f"http://127.0.0.1:{rpc_port}", "--cookie", str(cookie),
                    "--count", str(count), "--duration", str(args.duration), "--seed", str(i),
                    "--open-concurrency", str(args.open_concurrency), "--funding-blocks", str(funding_blocks)]
            if args.full_clients:
                argv.append("--full-clients")
            reactor.spawnProcess(gen, sys.executable, argv, env={**os.environ, "PYTHONPATH": str(REPO)})
            gens.append(gen)
            await gen.expect("ready")  # one at a time: each mines its own coins on the shared chain
        how = "whole clients (sign, store c, pay())" if args.full_clients else "payments signed before the clock starts"
        print(f"twisted-paychan, {args.channels} channels from {args.generators} load generators, {how}, "
              f"open-files limit {limit}; Python {sys.version.split()[0]}")
        probe.loop.start(0.25)

        # -- phase 1: opens ------------------------------------------------------------------
        probe.phase = "opening"
        ns0, t0 = cpu_ns(server.pid), time.perf_counter()
        for gen in gens:
            gen.say("open")
        opened = [json.loads(await gen.expect("opened")) for gen in gens]
        elapsed = time.perf_counter() - t0
        ns1 = cpu_ns(server.pid)
        total = sum(o["opened"] for o in opened)
        print(f"opening:  {total} channels opened ({sum(o['failed'] for o in opened)} failed) in {elapsed:.1f} s: "
              f"{total / elapsed:.0f} opens/s; server CPU {(ns1 - ns0) / max(1, total) / 1e3:.0f} us per open")
        print(f"          liveness probe: {quantiles(probe.by_phase.get('opening', []))}; "
              f"{sum(1 for s in probe.by_phase.get('opening', []) if s > 0.1)} over 100 ms")
        rss_open = rss_bytes(server.pid)
        print(f"          server RSS {rss_open / 2**20:.0f} MiB with {total} channels connected")

        # -- phase 2: everyone pays once a second ---------------------------------------------
        probe.phase = "paying"
        ns0, t0 = cpu_ns(server.pid), time.perf_counter()
        peak = rss_open

        def sample_rss() -> None:
            nonlocal peak
            if server.poll() is None:
                peak = max(peak, rss_bytes(server.pid))

        sampler = task.LoopingCall(sample_rss)
        sampler.clock = reactor
        sampler.start(1.0)
        for gen in gens:
            await gen.expect("signed")
        for gen in gens:
            gen.say("pay")
        for gen in gens:
            await gen.expect("paid")
        paid = [json.loads((tmp / f"generator{i}" / "paid.json").read_text()) for i in range(len(gens))]
        sampler.stop()
        elapsed = time.perf_counter() - t0
        ns1 = cpu_ns(server.pid)
        asked = sum(p["asked"] for p in paid)
        acked = sum(p["acked"] for p in paid)
        latencies = [x for p in paid for x in p["latencies"]]
        print(f"paying:   {args.duration} s, each channel once a second: {asked} payments sent, {acked} acknowledged, "
              f"{sum(p['skipped'] for p in paid)} skipped (previous one unanswered), "
              f"{sum(p['errors'] for p in paid)} failed, {sum(p['unanswered'] for p in paid)} never answered")
        print(f"          latency {quantiles(latencies)}; {acked / args.duration:.0f} payments/s")
        print(f"          server CPU {(ns1 - ns0) / elapsed / 1e9 * 100:.0f} % of a core, "
              f"{(ns1 - ns0) / max(1, acked) / 1e3:.0f} us per payment; server RSS peak {peak / 2**20:.0f} MiB")
        print(f"          load generators' CPU {sum(p['cpu_s'] for p in paid):.0f} s in total (whole run)")
        print(f"          liveness probe: {quantiles(probe.by_phase.get('paying', []))}; "
              f"{sum(1 for s in probe.by_phase.get('paying', []) if s > 0.1)} over 100 ms; "
              f"{probe.failures} probes failed")
        probe.loop.stop()
        for gen in gens:
            gen.say("exit")
        for gen in gens:
            await gen.ended
    finally:
        if probe.loop.running:
            probe.loop.stop()
        for gen in gens:
            if gen.transport is not None and gen.transport.pid is not None:
                gen.transport.signalProcess("KILL")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of paying")
    p.add_argument("--generators", type=int, default=2, help="load-generator processes")
    p.add_argument("--open-concurrency", type=int, default=100, help="handshakes in flight per generator")
    # Internal: one load generator.
    p.add_argument("--full-clients", action="store_true",
                   help="pay through the whole client (sign, store c, pay()) instead of sending payments signed "
                        "before the clock starts: measures the load generators as much as the server")
    p.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rpc-url", help=argparse.SUPPRESS)
    p.add_argument("--cookie", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--funding-blocks", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.presigned = not args.full_clients
    run = generator if args.generator else coordinator
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
