"""
Payments per second between a client process and a server process over loopback TCP, with
durable stores on both sides (every payment synced to disk by the client before it is sent and
by the server before it is acknowledged), on the embedded regtest chain.

    python bench/bench_payments.py [--payments N] [--channels K] [--idle M] [--api off|on|scrape]
                                   [--window W] [--floor-rounds R]

Starts ``twistd paychan`` (the real server) in a child process, then in this process a client
that reaches the server's chain over JSON-RPC. Prints: one channel's rate and latency
percentiles and its ratio to the durable floor (``bench_sync_floor.py``, run in the same run just
before), one channel with W payments in flight (``max_in_flight``, default 64), K channels at
once (one client process, one store), the CPU time per payment of
the server (from the scheduler's ``schedstat``, with the tick-sampled utime/stime beside it) and
of the client, how many payments each client sync covered, and the server's memory per open idle
channel connection. ``--api`` runs the server with its HTTP API off (the default here), on,
or on with this process reading ``/metrics`` once a second as a Prometheus server would
(``scrape``). ``PAYCHAN_PROFILE=FILE`` runs the server under cProfile. How to read the
figures, and where the time goes: ``doc/performance.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted.internet import defer, task  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def start_server(tmp: Path, listen: str, rpc_port: int, *options: str, **popen: Any) -> subprocess.Popen:
    """``twistd paychan`` in a child process with its data in ``tmp/server``, the limits that
    would refuse one address's many connections off, and its API off unless ``options`` name
    one. ``PAYCHAN_PROFILE=FILE`` runs it under cProfile (twistd --profile) into FILE."""
    profile = os.environ.get("PAYCHAN_PROFILE")
    profiling = ["--profile", profile, "--profiler", "cprofile", "--savestats"] if profile else []
    api = [] if "--api-listen" in options else ["--api-listen", "none"]
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
         f"--logfile={tmp / 'server.log'}", *profiling, "paychan", "--data-dir", str(tmp / "server"),
         "--listen", listen, "--rpc-listen", f"tcp:{rpc_port}:interface=127.0.0.1", "--fee-rate", "1000",
         # Every client here is one address: the per-address limits (hostile peers) would refuse
         # the connections that are being measured.
         "--max-connections-per-address", "0", "--max-handshakes-per-minute", "0", *api, *options],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen,
    )


async def wait_started(reactor: Any, tmp: Path, port: int, tries: int = 1200) -> Path:
    """Wait until the server's chain cookie exists and its channel port answers; its cookie."""
    cookie = tmp / "server" / "chain" / ".cookie"
    for _ in range(tries):
        if cookie.exists():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return cookie
            except OSError:
                pass
        await task.deferLater(reactor, 0.05, lambda: None)
    raise RuntimeError(f"the server did not start: {(tmp / 'server.log').read_text()[-2000:]}")

def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_ns(pid: int) -> int:
    """CPU time of all a process's threads, in ns, as the scheduler counts it
    (``/proc/PID/task/*/schedstat``): exact, where utime/stime are sampled at each clock tick
    and on this VM read two to three times higher for a process that runs in short bursts."""
    total = 0
    for task_dir in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task_dir / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def sync_floor(rounds: int) -> float:
    """Round trips per second of ``bench_sync_floor.py`` (two processes, a sync each way), now."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "bench_sync_floor.py"), "--rounds", str(rounds),
                          "--round-trips-only"], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def main(reactor, args) -> None:
    from twisted.internet.endpoints import clientFromString

    from twisted_paychan.channel.settings import ClientSettings, VersionSelector
    from twisted_paychan.net.client import connect
    from twisted_paychan.chain.rpc.chain import RpcChain
    from twisted_paychan.store.sqlite import SqliteChannelStore
    from twisted_paychan.wallet.sqlite import SqliteWallet

    tmp = Path(tempfile.mkdtemp(prefix="paychan-bench-"))
    port, rpc_port = free_port(), free_port()
    server = start_server(tmp, f"tcp:{port}:interface=127.0.0.1", rpc_port,
                          "--api-listen", "none" if args.api == "off" else "tcp:0:interface=127.0.0.1")
    try:
        cookie = await wait_started(reactor, tmp, port)
        chain = RpcChain.from_url(reactor, f"http://127.0.0.1:{rpc_port}", cookie_path=cookie, poll_interval=1.0)
        await chain.start()
        wallet = SqliteWallet.open(tmp / "client-wallet.sqlite", chain)
        store = SqliteChannelStore(str(tmp / "client-channels.sqlite"), reactor)
        address = await wallet.new_address()
        await chain.connection.call("generatetoaddress", 5, address)
        await chain.connection.call("generatetoaddress", 100, await wallet.new_address())
        endpoint = clientFromString(reactor, f"tcp:127.0.0.1:{port}")
        settings = ClientSettings(channel_value=50_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)

        async def open_channel(n: int):
            return await connect(reactor, endpoint, wallet, chain, store, settings,
                                 hashlib.sha256(b"bench %d" % n).digest(), None)

        scrapes = _scraper(reactor, tmp / "server") if args.api == "scrape" else None
        print(f"twisted-paychan payments, client and server in separate processes, durable stores; "
              f"Python {sys.version.split()[0]}; API {args.api}")
        # -- one channel -----------------------------------------------------------------------
        conn = await open_channel(0)
        for _ in range(200):  # warm up (SQLite WAL files grow to their working size)
            await conn.pay(1)
        # The floor is measured in the same run, in turns with the payments (five chunks each),
        # so that both see the same load on a shared machine; the ratio is of the sums.
        latencies = []
        paying = floor_rounds = floor_time = 0.0
        cpu0, ns0, mine0 = cpu_times(server.pid), cpu_ns(server.pid), time.process_time()
        chunks = 5
        for chunk in range(chunks):
            rounds = args.floor_rounds // chunks
            floor_rounds += rounds
            floor_time += rounds / sync_floor(rounds)
            start = time.perf_counter()
            for _ in range(args.payments // chunks):
                t = time.perf_counter()
                await conn.pay(1)
                latencies.append(time.perf_counter() - t)
            paying += time.perf_counter() - start
        cpu1, ns1, mine1 = cpu_times(server.pid), cpu_ns(server.pid), time.process_time()
        # (the server's CPU over the chunks: it is idle while the floor runs)
        made = len(latencies)
        latencies.sort()
        q = statistics.quantiles(latencies, n=100)
        floor = floor_rounds / floor_time
        print(f"1 channel:   {made / paying:8.0f} payments/s   latency p50 {q[49]*1e3:.2f} ms  "
              f"p99 {q[98]*1e3:.2f} ms  max {latencies[-1]*1e3:.2f} ms")
        print(f"             sync floor {floor:.0f} round trips/s (bench_sync_floor.py, in turns with the "
              f"payments): ratio {made / paying / floor:.2f}")
        user, system = ((b - a) / made * 1e6 for a, b in zip(cpu0, cpu1))
        print(f"             server CPU {(ns1 - ns0) / made / 1e3:.0f} us per payment (scheduler); "
              f"ticks say {user + system:.0f} ({user:.0f} user + {system:.0f} system)")
        print(f"             client CPU {(mine1 - mine0) / made * 1e6:.0f} us per payment")

        # -- one channel, W payments in flight -------------------------------------------------
        from twisted_paychan.net.pipelined import pay_windowed

        windowed = ClientSettings(channel_value=50_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000,
                                  max_in_flight=args.window)
        wconn = await connect(reactor, endpoint, wallet, chain, store, windowed,
                              hashlib.sha256(b"bench windowed").digest(), None)
        await pay_windowed(wconn.pay, 500, 1, None, args.window)  # warm up
        count = args.payments * 2
        cpu0, ns0, mine0 = cpu_times(server.pid), cpu_ns(server.pid), time.process_time()
        commits0, writes0 = store.commits, store.writes
        start = time.perf_counter()
        await pay_windowed(wconn.pay, count, 1, None, args.window)
        elapsed = time.perf_counter() - start
        cpu1, ns1, mine1 = cpu_times(server.pid), cpu_ns(server.pid), time.process_time()
        print(f"1 channel, W={args.window}: {count / elapsed:8.0f} payments/s  ({count / elapsed / floor:.1f}x the floor)")
        print(f"             server CPU {(ns1 - ns0) / count / 1e3:.0f} us per payment (scheduler); "
              f"client CPU {(mine1 - mine0) / count * 1e6:.0f} us; "
              f"{count / max(1, store.commits - commits0):.1f} payments per client sync")
        wconn.disconnect()

        # -- K channels at once ----------------------------------------------------------------
        conns = [conn] + [await open_channel(n) for n in range(1, args.channels)]
        per = args.payments // args.channels * 2

        async def stream(c):
            for _ in range(per):
                await c.pay(1)

        cpu0, ns0, mine0 = cpu_times(server.pid), cpu_ns(server.pid), time.process_time()
        commits0, writes0 = store.commits, store.writes
        start = time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(stream(c)) for c in conns])
        elapsed = time.perf_counter() - start
        cpu1, ns1, mine1 = cpu_times(server.pid), cpu_ns(server.pid), time.process_time()
        total = per * args.channels
        user, system = ((b - a) / total * 1e6 for a, b in zip(cpu0, cpu1))
        print(f"{args.channels} channels: {total / elapsed:8.0f} payments/s in total")
        print(f"             server CPU {(ns1 - ns0) / total / 1e3:.0f} us per payment (scheduler); "
              f"ticks say {user + system:.0f} ({user:.0f} user + {system:.0f} system)")
        print(f"             client CPU {(mine1 - mine0) / total * 1e6:.0f} us per payment; "
              f"{(store.writes - writes0) / max(1, store.commits - commits0):.1f} writes per client sync")

        # -- memory per idle open channel connection ---------------------------------------------
        before = rss_bytes(server.pid)
        idle = [await open_channel(1000 + n) for n in range(args.idle)]
        await task.deferLater(reactor, 0.5, lambda: None)
        after = rss_bytes(server.pid)
        print(f"{args.idle} idle open channels: server RSS +{(after - before) / 1024:.0f} KiB, "
              f"{(after - before) / args.idle / 1024:.1f} KiB per connection")
        for c in conns + idle:
            c.disconnect()
        await store.close()
        wallet.close()
        await chain.stop()
        if scrapes is not None:
            scrapes.stop()
            print(f"/metrics read {scrapes.count} times")
        print(f"client process CPU: {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s user")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


class _Scrapes:
    def __init__(self, loop) -> None:
        self.loop = loop
        self.count = 0

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


def _scraper(reactor, data_dir: Path) -> _Scrapes:
    """Read the server's ``/metrics`` once a second, as a Prometheus server would."""
    import json

    import treq

    advertised = json.loads((data_dir / "api.json").read_text())
    token = Path(advertised["token_file"]).read_text().strip()
    url = advertised["url"] + "/metrics"

    async def scrape() -> None:
        response = await treq.get(url, headers={"Authorization": f"Bearer {token}"}, persistent=False)
        body = await response.content()
        if response.code == 200 and b"paychan_payments_total" in body:
            scrapes.count += 1

    loop = task.LoopingCall(lambda: defer.ensureDeferred(scrape()).addErrback(lambda f: print(f.getErrorMessage())))
    loop.clock = reactor
    scrapes = _Scrapes(loop)
    loop.start(1.0)
    return scrapes


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--payments", type=int, default=3000)
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--idle", type=int, default=100)
    p.add_argument("--api", choices=("off", "on", "scrape"), default="off",
                   help="the server's HTTP API: off, on, or on and read once a second (/metrics)")
    p.add_argument("--window", type=int, default=64, help="payments in flight for the pipelined figure")
    p.add_argument("--floor-rounds", type=int, default=3000, help="round trips of the sync floor measurement")
    args = p.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
