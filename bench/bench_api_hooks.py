"""
What the HTTP API's hooks add to one payment on the server, in isolation: the calls a payment
makes into ``api.metrics.ServerMetrics`` (UPDATE_PAYMENT in, PAYMENT_ACK out, the PAYMENT event,
one store batch timed) and into ``api.events.EventLog`` (the event kept for replay), timed in a
loop in one process. A figure that the machine's load moves much less than ``bench_payments``'s.

    python bench/bench_api_hooks.py [--payments N] [--rounds R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.task import Clock  # noqa: E402

from twisted_paychan.api.events import EventLog  # noqa: E402
from twisted_paychan.api.metrics import ServerMetrics  # noqa: E402
from twisted_paychan.channel.server_lifecycle_events import ChannelEvent, ChannelEventKind  # noqa: E402
from twisted_paychan.net.subscribers import Subscribers  # noqa: E402
from twisted_paychan.wire import messages as m  # noqa: E402


def one_round(n: int) -> float:
    metrics, events = ServerMetrics(), EventLog(Clock())
    subscribers: Subscribers[ChannelEvent] = Subscribers()
    subscribers.add(metrics.event)
    subscribers.add(events.publish)
    connection = object()
    ack = m.payment_ack(None)
    txid = bytes(32)
    metrics.connected(connection)  # type: ignore[arg-type]
    start = time.perf_counter()
    for i in range(n):
        metrics.update_received(connection)  # type: ignore[arg-type]
        subscribers.notify(ChannelEvent(ChannelEventKind.PAYMENT, txid, increase=1, total=i))
        metrics.sent(connection, ack)  # type: ignore[arg-type]
        metrics.store_sync.observe(0.0001)  # the store's sync_observer
    return (time.perf_counter() - start) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--payments", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    costs = sorted(one_round(args.payments) for _ in range(args.rounds))
    print(f"API hooks per payment: best {costs[0] * 1e6:.2f} us, median {costs[len(costs) // 2] * 1e6:.2f} us "
          f"({args.rounds} rounds of {args.payments})")


if __name__ == "__main__":
    main()
