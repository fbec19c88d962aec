"""
The floor under one channel's payment rate on this machine: two processes that do nothing but
what a payment must do durably, in the order it must be done.

    python bench/bench_sync_floor.py [--rounds N]

A "client" process writes one slot to its payment log (``store.paylog``, the same write and
``fdatasync`` the channel store makes), then sends 100 bytes over a loopback socket; the
"server" process receives them, writes and syncs one slot of its own log, and answers with 20
bytes; then the client goes again. No signing, no verification, no protobuf, no reactor. The
round trips per second are an upper bound for any implementation that, like ours, makes the
client's new change durable before it sends a payment and the server's payment durable before it
acknowledges it (spec §11; issue #4): everything else a payment costs comes on top of this.

Also printed: one log write and sync on its own (median and p99), and the same with a SQLite
commit (WAL, ``synchronous=FULL``) for comparison.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted_paychan.store import paylog  # noqa: E402

TXID = bytes(32)


def open_log(path: Path, rounds: int) -> paylog.PaymentLog:
    log = paylog.PaymentLog(str(path), slots=rounds)
    log.open(1)
    log.prepare()
    return log


def quantiles(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return f"p50 {q[49] * 1e6:.0f} us, p99 {q[98] * 1e6:.0f} us"


def single_syncs(tmp: Path, rounds: int) -> None:
    log = open_log(tmp / "single-paylog", rounds)
    times = []
    for n in range(rounds):
        t = time.perf_counter()
        log.append([paylog.encode_slot(1, paylog.CLIENT_CHANGE, TXID, n)])
        times.append(time.perf_counter() - t)
    log.close()
    print(f"payment log, one slot + fdatasync:      {quantiles(times)}")
    db = sqlite3.connect(str(tmp / "single.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
    db.execute("INSERT INTO t VALUES (1, 0)")
    times = []
    for n in range(rounds):
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE t SET v = ? WHERE k = 1", (n,))
        db.execute("COMMIT")
        times.append(time.perf_counter() - t)
    db.close()
    print(f"SQLite commit (WAL, synchronous=FULL):  {quantiles(times)}")


def ping_pong(tmp: Path, rounds: int) -> float:
    client_end, server_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the "server"
        client_end.close()
        log = open_log(tmp / "server-paylog", rounds)
        for n in range(rounds):
            server_end.recv(100)
            log.append([paylog.encode_slot(1, paylog.SERVER_PAYMENT, TXID, n, b"\x30" * 71)])
            server_end.send(b"a" * 20)
        os._exit(0)
    server_end.close()
    log = open_log(tmp / "client-paylog", rounds)
    start = time.perf_counter()
    for n in range(rounds):
        log.append([paylog.encode_slot(1, paylog.CLIENT_CHANGE, TXID, rounds - n)])
        client_end.send(b"u" * 100)
        client_end.recv(100)
    elapsed = time.perf_counter() - start
    os.waitpid(pid, 0)
    return rounds / elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3000)
    p.add_argument("--round-trips-only", action="store_true",
                   help="print only the round trips per second (bench_payments.py reads it)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="paychan-floor-") as tmp:
        if args.round_trips_only:
            print(f"{ping_pong(Path(tmp), args.rounds):.1f}")
            return
        print("the durable floor under one channel's payments (loopback, this disk)")
        single_syncs(Path(tmp), args.rounds)
        rate = ping_pong(Path(tmp), args.rounds)
        print(f"two processes, sync + round trip each:  {rate:.0f} round trips/s ({1e6 / rate:.0f} us each)")


if __name__ == "__main__":
    main()
