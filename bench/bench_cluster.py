"""
Several servers on one PostgreSQL (issue 13) beside one server on SQLite: payments per second in
total, latency percentiles and the servers' CPU per payment, durable everywhere.

    python bench/bench_cluster.py [--channels K] [--payments N] [--runs R]

Starts a throw-away PostgreSQL (``tests/store/postgres_server.py``: ``initdb``, loopback port;
``fsync`` and ``synchronous_commit`` on, as the figures print) and three ``twistd paychan``
processes with ``bench_payments.start_server``: node A (PostgreSQL store, and the embedded
regtest chain the others reach over JSON-RPC), node B (the same PostgreSQL schema, A's chain), and
one server on its own SQLite store and embedded chain. In this process, one client per side
(SQLite wallet and store, durable) opens K channels: on the cluster, spread over A and B by turns;
on SQLite, all on the one server. Then R rounds, the cluster and SQLite in turns (so both see the
same load on a shared machine): each channel makes N payments of 1 sat, one after the other,
every channel at once, and the round's total rate, latency p50/p99 over all its payments, and
server CPU per payment (``/proc/PID/task/*/schedstat`` of every server process, summed) are
recorded. Prints min / median / max over the rounds, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "store"))

from twisted.internet import defer, task  # noqa: E402

from bench_payments import cpu_ns, free_port, start_server, wait_started  # noqa: E402


@dataclass
class Side:
    """One side of the comparison: its server processes, its client, its open channels."""

    name: str
    servers: list[Any]
    connections: list[Any]
    #: payments/s, p50 s, p99 s, servers' CPU s per payment, PostgreSQL's CPU s per payment
    rounds: list[tuple[float, float, float, float, float]]
    #: The PostgreSQL postmaster's pid, whose processes (one backend per store) are counted too.
    postmaster: int = 0


def _postgres_pids(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, WAL writer, checkpointer...)."""
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


async def _listening(reactor: Any, proc: Any, port: int, tmp: Path) -> None:
    """Wait until a server on another node's chain answers on ``port`` (``wait_started`` waits
    for a chain cookie of its own, which it does not have)."""
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            await task.deferLater(reactor, 0.05, lambda: None)
    raise RuntimeError(f"the server did not start: {(tmp / 'server.log').read_text()[-2000:]}")


async def _client(reactor: Any, tmp: Path, rpc_port: int, cookie: Path) -> tuple[Any, Any, Any]:
    from twisted_paychan.chain.rpc.chain import RpcChain
    from twisted_paychan.store.sqlite import SqliteChannelStore
    from twisted_paychan.wallet.sqlite import SqliteWallet

    chain = RpcChain.from_url(reactor, f"http://127.0.0.1:{rpc_port}", cookie_path=cookie, poll_interval=1.0)
    await chain.start()
    tmp.mkdir(exist_ok=True)
    wallet = SqliteWallet.open(tmp / "client-wallet.sqlite", chain)
    store = SqliteChannelStore(str(tmp / "client-channels.sqlite"), reactor)
    await chain.connection.call("generatetoaddress", 6, await wallet.new_address())
    await chain.connection.call("generatetoaddress", 100, await wallet.new_address())
    return chain, wallet, store


async def _open(reactor: Any, ports: list[int], channels: int, chain: Any, wallet: Any, store: Any,
                label: str) -> list[Any]:
    from twisted.internet.endpoints import clientFromString

    from twisted_paychan.channel.settings import ClientSettings, VersionSelector
    from twisted_paychan.net.client import connect

    settings = ClientSettings(channel_value=20_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
    connections = []
    for n in range(channels):
        endpoint = clientFromString(reactor, f"tcp:127.0.0.1:{ports[n % len(ports)]}")
        server_id = hashlib.sha256(f"bench cluster {label} {n}".encode()).digest()
        connections.append(await connect(reactor, endpoint, wallet, chain, store, settings, server_id, None))
    return connections


async def _round(side: Side, per_channel: int) -> None:
    """Every channel at once, each paying ``per_channel`` times, one payment after the other."""
    latencies: list[float] = []

    async def stream(conn: Any) -> None:
        for _ in range(per_channel):
            t = time.perf_counter()
            await conn.pay(1)
            latencies.append(time.perf_counter() - t)

    pids = [server.pid for server in side.servers]
    database = _postgres_pids(side.postmaster) if side.postmaster else []
    cpu0, db0 = sum(cpu_ns(pid) for pid in pids), sum(cpu_ns(pid) for pid in database)
    start = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(stream(c)) for c in side.connections])
    elapsed = time.perf_counter() - start
    cpu1, db1 = sum(cpu_ns(pid) for pid in pids), sum(cpu_ns(pid) for pid in database)
    total = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    side.rounds.append((total / elapsed, q[49], q[98], (cpu1 - cpu0) / 1e9 / total, (db1 - db0) / 1e9 / total))


def _spread(values: list[float], scale: float, fmt: str) -> str:
    return " / ".join(format(v * scale, fmt) for v in (min(values), statistics.median(values), max(values)))


def _report(side: Side) -> None:
    rates, p50, p99, cpu, db = (list(column) for column in zip(*side.rounds))
    indent = " " * (len(side.name) + 2)
    print(f"{side.name}: {_spread(rates, 1, '.0f')} payments/s in total (min / median / max of {len(rates)} rounds)")
    print(f"{indent}latency p50 {_spread(p50, 1e3, '.2f')} ms, p99 {_spread(p99, 1e3, '.2f')} ms")
    print(f"{indent}server CPU {_spread(cpu, 1e6, '.0f')} us per payment (all server processes, scheduler)"
          + (f"; PostgreSQL CPU {_spread(db, 1e6, '.0f')} us" if side.postmaster else ""))


def _same_words(*data_dirs: Path) -> None:
    """Both nodes' wallets from one seed (a cluster refuses a node with other words: the
    channel keys are derived from it at paths in the database)."""
    from twisted_paychan.bitcoin.addresses import REGTEST
    from twisted_paychan.wallet.hd import Seed
    from twisted_paychan.wallet.sqlite import SqliteWallet

    words = Seed.generate(REGTEST).mnemonic()
    for data_dir in data_dirs:
        data_dir.mkdir(mode=0o700)
        SqliteWallet.open(data_dir / "wallet.sqlite", None, REGTEST, seed=Seed.from_mnemonic(words, REGTEST)).close()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    import psycopg
    from postgres_server import start_server as start_postgres

    tmp = Path(tempfile.mkdtemp(prefix="paychan-bench-cluster-"))
    postgres = start_postgres()
    processes: list[Any] = []
    try:
        info = postgres.fresh_database()
        schema = info.rsplit("search_path=", 1)[1].rstrip("'")
        with psycopg.connect(postgres.conninfo()) as db:
            fsync = db.execute("SHOW fsync").fetchone()
            synchronous_commit = db.execute("SHOW synchronous_commit").fetchone()
        url = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres?options=-c%20search_path%3D{schema}"
        port_a, port_b, port_s = free_port(), free_port(), free_port()
        rpc_a, rpc_s = free_port(), free_port()
        for name in ("a", "b", "s"):
            (tmp / name).mkdir()
        _same_words(tmp / "a" / "server", tmp / "b" / "server")
        node_a = start_server(tmp / "a", f"tcp:{port_a}:interface=127.0.0.1", rpc_a, "--store", url)
        processes.append(node_a)
        cookie_a = await wait_started(reactor, tmp / "a", port_a)
        node_b = start_server(tmp / "b", f"tcp:{port_b}:interface=127.0.0.1", free_port(), "--store", url,
                              "--chain", f"http://127.0.0.1:{rpc_a}", "--rpc-cookie", str(cookie_a))
        processes.append(node_b)
        sqlite = start_server(tmp / "s", f"tcp:{port_s}:interface=127.0.0.1", rpc_s)
        processes.append(sqlite)
        cookie_s = await wait_started(reactor, tmp / "s", port_s)
        await _listening(reactor, node_b, port_b, tmp / "b")

        chain_c, wallet_c, store_c = await _client(reactor, tmp / "client-pg", rpc_a, cookie_a)
        chain_s, wallet_s, store_s = await _client(reactor, tmp / "client-sqlite", rpc_s, cookie_s)
        cluster = Side("2 servers, PostgreSQL", [node_a, node_b],
                       await _open(reactor, [port_a, port_b], args.channels, chain_c, wallet_c, store_c, "pg"), [],
                       int(Path(postgres.data, "postmaster.pid").read_text().split()[0]))
        single = Side("1 server, SQLite", [sqlite],
                      await _open(reactor, [port_s], args.channels, chain_s, wallet_s, store_s, "sqlite"), [])
        print(f"twisted-paychan, {args.channels} channels paying at once ({args.payments} payments of 1 sat each "
              f"per round), client and servers in separate processes on one machine, durable stores; "
              f"PostgreSQL fsync={fsync[0] if fsync else '?'}, synchronous_commit="
              f"{synchronous_commit[0] if synchronous_commit else '?'}; Python {sys.version.split()[0]}")
        for side in (cluster, single):  # warm up: connections, WAL files, caches
            await _round(side, max(1, args.payments // 10))
            side.rounds.clear()
        for _ in range(args.runs):
            for side in (cluster, single):
                await _round(side, args.payments)
        _report(cluster)
        _report(single)
        ratio = statistics.median(r[0] for r in cluster.rounds) / statistics.median(r[0] for r in single.rounds)
        print(f"ratio of the medians, cluster / SQLite: {ratio:.2f}")
        for side in (cluster, single):
            for conn in side.connections:
                conn.disconnect()
        for chain, wallet, store in ((chain_c, wallet_c, store_c), (chain_s, wallet_s, store_s)):
            await store.close()
            wallet.close()
            await chain.stop()
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        postgres.stop("immediate")
        shutil.rmtree(postgres.directory, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--payments", type=int, default=300, help="payments per channel in each round")
    p.add_argument("--runs", type=int, default=5, help="rounds of each side, in turns")
    args = p.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
