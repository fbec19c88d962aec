"""
Calls per payment of the real server, from two profiled runs that differ only in how many
payments they make: what does not depend on the machine's load (apart from how many payments
one read or one sync happens to cover).

    PAYCHAN_PROFILE=a.prof python bench/bench_payments.py --payments 1000 --idle 1 --floor-rounds 100
    PAYCHAN_PROFILE=b.prof python bench/bench_payments.py --payments 3000 --idle 1 --floor-rounds 100
    python bench/profile_diff.py a.prof b.prof 10000

``bench_payments.py --payments P`` makes 5P payments after its warm-ups (P sequential, 2P at
W=64, 2P over ten channels), so the runs above differ by 10,000. Prints the Python-level calls
per payment and, per payment, the system calls and Twisted pieces that issue #12 looked at.
"""

from __future__ import annotations

import argparse
import pstats

WATCHED = (
    ("send", "<method 'send' of '_socket.socket' objects>"),
    ("recv", "<method 'recv' of '_socket.socket' objects>"),
    ("epoll_wait", "<method 'poll' of 'select.epoll' objects>"),
    ("fdatasync", "<built-in method posix.fdatasync>"),
    ("verify (libsecp256k1)", "<built-in method _libsecp256k1.secp256k1_ecdsa_verify>"),
    ("log.callWithLogger", "callWithLogger"),
    ("Deferred._runCallbacks", "_runCallbacks"),
    ("reactor.callLater", "callLater"),
)


def counts(path: str) -> tuple[int, dict[str, int]]:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    by_name: dict[str, int] = {}
    for (_, _, name), row in stats.items():
        by_name[name] = by_name.get(name, 0) + row[1]
    return sum(row[1] for row in stats.values()), by_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fewer", help="profile of the run with fewer payments")
    p.add_argument("more", help="profile of the run with more payments")
    p.add_argument("payments", type=int, help="how many more payments the second run made")
    args = p.parse_args()
    calls_a, names_a = counts(args.fewer)
    calls_b, names_b = counts(args.more)
    print(f"Python-level calls per payment: {(calls_b - calls_a) / args.payments:.1f}")
    for label, name in WATCHED:
        print(f"  {label:<24} {(names_b.get(name, 0) - names_a.get(name, 0)) / args.payments:.3f}")


if __name__ == "__main__":
    main()
