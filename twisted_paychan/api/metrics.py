"""
``GET /metrics``: the server's figures in Prometheus' text format, from an explicit
``prometheus_client.CollectorRegistry`` (never the process-wide one, so two servers in one
process, as the tests run them, do not mix).

Two kinds of figure:

* **Counted as they happen** by :class:`ServerMetrics`, the manager's ``ServerObserver`` and one
  of its subscribers: payments and the satoshis they brought, payment latency (UPDATE_PAYMENT
  in to PAYMENT_ACK out), store sync latency (one durable batch: write and ``fdatasync``),
  protocol errors by code and direction, connection closes by reason, channel events by kind,
  settlements broadcast, confirmed and stuck, connected clients. They are plain integers and
  bucket lists (:class:`Tally`), turned into metric families only when scraped:
  ``prometheus_client``'s own ``Counter.inc`` and ``Histogram.observe`` take a lock and cost
  several microseconds each, too much for every payment (``bench/bench_api_hooks.py``).
* **Read at scrape time** by :class:`Snapshot`, on the reactor thread, from the store and the
  chain before the text is rendered: channels by state, value locked, what clients paid us,
  the chain tip height, the seconds until the next channel expires.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from twisted_paychan.channel.errors import CloseReason, ErrorCode
from twisted_paychan.channel.server_lifecycle_events import ChannelEvent, ChannelEventKind
from twisted_paychan.wire.messages import MT, TwoWayChannelMessage

if TYPE_CHECKING:
    from twisted_paychan.net.server_channel import ServerChannel
    from twisted_paychan.wallet.remote import ISignerStatus

#: Payment latency buckets, seconds: a payment on loopback takes ~100 µs to a few ms (the sync).
PAYMENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
#: Store sync buckets: an ``fdatasync`` is tens of µs on tmpfs to tens of ms on a disk.
SYNC_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return "OTHER"  # an unknown code reads as OTHER (§1.3)


@dataclass
class Snapshot:
    """The figures read from the store and the chain just before a scrape."""

    channels_by_state: dict[str, int] = field(default_factory=dict)
    value_locked: int = 0
    paid_to_us: int = 0
    tip_height: Optional[int] = None
    next_expiry_in: Optional[float] = None


class Buckets:
    """A histogram as two lists: observing is a C bisect and two additions."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, n in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), self.counts):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


#: Counts by label values, in the order of the family's labels.
Labelled = dict[tuple[str, ...], int]


def _labelled(name: str, documentation: str, labels: list[str], counts: Labelled) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key), n)
    return family


class ServerMetrics(Collector):
    """Every metric of one server, on its own registry. Give :meth:`observe_store` the store
    and set ``manager.observer = metrics`` and ``manager.subscribe(metrics.event)``."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.timer = timer
        self.payments = 0
        self.received_sat = 0
        self.payment_latency = Buckets(PAYMENT_BUCKETS)
        self.store_sync = Buckets(SYNC_BUCKETS)
        self.protocol_errors: Labelled = {}
        self.closes: Labelled = {}
        self.channel_events: Labelled = {}
        self.settlements_broadcast = 0
        self.settlements_confirmed = 0
        self.settlements_stuck = 0
        self.connected_clients = 0
        #: The wallet's remote signer (``observe_wallet``), or None.
        self.signer: Optional["ISignerStatus"] = None
        self.snapshot = Snapshot()
        #: UPDATE_PAYMENT arrival times not yet acknowledged, per connection.
        self._pending: dict["ServerChannel", list[float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- ServerObserver ------------------------------------------------------------------------

    def connected(self, connection: "ServerChannel") -> None:
        self.connected_clients += 1

    def disconnected(self, connection: "ServerChannel", reason: CloseReason) -> None:
        self.connected_clients -= 1
        key = (reason.name.lower(),)
        self.closes[key] = self.closes.get(key, 0) + 1
        self._pending.pop(connection, None)

    def update_received(self, connection: "ServerChannel") -> None:
        pending = self._pending.get(connection)
        if pending is None:
            self._pending[connection] = [self.timer()]
        else:
            pending.append(self.timer())

    def error_received(self, connection: "ServerChannel", code: int) -> None:
        self._count_error(code, "received")

    def _count_error(self, code: int, direction: str) -> None:
        key = (_code_name(code), direction)
        self.protocol_errors[key] = self.protocol_errors.get(key, 0) + 1

    def sent(self, connection: "ServerChannel", message: TwoWayChannelMessage) -> None:
        kind = message.type
        if kind == MT.PAYMENT_ACK:
            pending = self._pending.get(connection)
            if pending:
                self.payment_latency.observe(self.timer() - pending.pop(0))
        elif kind == MT.ERROR:
            self._count_error(message.error.code, "sent")
            self._pending.pop(connection, None)  # whatever was pending is refused: the connection ends

    def settlement_broadcast(self, contract_txid: bytes) -> None:
        self.settlements_broadcast += 1

    # -- the manager's events and the store -----------------------------------------------------

    def event(self, event: ChannelEvent) -> None:
        kind = event.kind
        if kind is ChannelEventKind.PAYMENT:
            self.payments += 1
            self.received_sat += event.increase
            return
        key = (kind.value,)
        self.channel_events[key] = self.channel_events.get(key, 0) + 1
        if kind is ChannelEventKind.SETTLED:
            self.settlements_confirmed += 1
        elif kind is ChannelEventKind.STUCK:
            self.settlements_stuck += 1

    def observe_wallet(self, wallet: object) -> None:
        """Report whether a remote signer can sign (``paychan_signer_up``), if the wallet has one."""
        from twisted_paychan.wallet.remote import ISignerStatus

        if ISignerStatus.providedBy(wallet):
            self.signer = ISignerStatus(wallet)

    def observe_store(self, store: object) -> None:
        """Time the store's durable batches, if it is one that can say (the SQLite store)."""
        if hasattr(store, "sync_observer"):
            setattr(store, "sync_observer", self.store_sync.observe)

    # -- the scrape -------------------------------------------------------------------------------

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition, with ``snapshot`` for the figures read at scrape time."""
        self.snapshot = snapshot
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("paychan_payments", "Payments stored (the initial one and every UPDATE_PAYMENT).",
                                  value=self.payments)
        yield CounterMetricFamily("paychan_payments_received_sat", "Satoshis received in payments since start.",
                                  value=self.received_sat)
        yield self.payment_latency.family("paychan_payment_latency_seconds",
                                          "UPDATE_PAYMENT received to PAYMENT_ACK sent.")
        yield self.store_sync.family("paychan_store_sync_seconds",
                                     "One durable channel store batch (write and sync).")
        yield _labelled("paychan_protocol_errors", "ERROR messages, by code and direction.", ["code", "direction"],
                        self.protocol_errors)
        yield _labelled("paychan_connections_closed", "Client connections ended, by reason.", ["reason"], self.closes)
        yield _labelled("paychan_channel_events", "Channel events published other than payments, by kind.", ["kind"],
                        self.channel_events)
        yield CounterMetricFamily("paychan_settlements_broadcast", "Settlements the chain backend accepted.",
                                  value=self.settlements_broadcast)
        yield CounterMetricFamily("paychan_settlements_confirmed", "Channels whose settlement confirmed.",
                                  value=self.settlements_confirmed)
        yield CounterMetricFamily("paychan_settlements_stuck",
                                  "Times a channel's settlement got stuck (unaffordable or refused).",
                                  value=self.settlements_stuck)
        yield GaugeMetricFamily("paychan_connected_clients", "Client connections open now.",
                                value=self.connected_clients)
        if self.signer is not None:
            yield GaugeMetricFamily("paychan_signer_up", "1 while the remote signer can sign, 0 while it cannot.",
                                    value=0 if self.signer.signer_problem() else 1)
            yield CounterMetricFamily("paychan_signer_failures",
                                      "Requests that failed for want of the remote signer (keys, settlements).",
                                      value=self.signer.failures)
        s = self.snapshot
        channels = GaugeMetricFamily("paychan_channels", "Server channels stored, by state.", labels=["state"])
        for state, n in s.channels_by_state.items():
            channels.add_metric([state], n)
        yield channels
        yield GaugeMetricFamily("paychan_value_locked_sat",
                                "Value of the channels not yet settled or refunded (open, settling, stuck), satoshis.",
                                value=s.value_locked)
        yield GaugeMetricFamily("paychan_paid_to_us_sat",
                                "What clients have paid the server in every stored channel (sum of b), satoshis.",
                                value=s.paid_to_us)
        if s.tip_height is not None:
            yield GaugeMetricFamily("paychan_chain_tip_height", "Height of the chain backend's tip.", value=s.tip_height)
        if s.next_expiry_in is not None:
            yield GaugeMetricFamily("paychan_next_expiry_seconds",
                                    "Seconds until the next open channel expires (negative: past).",
                                    value=s.next_expiry_in)
