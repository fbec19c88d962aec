"""
Configuration of each side, with the specification's defaults (PROTOCOL.md §12), validated
when built so that a bad setting fails at start-up, not in the middle of a handshake.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted_paychan import constants as C


class VersionSelector(enum.Enum):
    """What a client asks for and accepts (§3.1)."""

    VERSION_1 = "1"
    VERSION_2_ALLOW_1 = "2or1"
    VERSION_2 = "2"

    @property
    def requested_major(self) -> int:
        return 1 if self is VersionSelector.VERSION_1 else 2

    def accepts(self, major: int) -> bool:
        if self is VersionSelector.VERSION_1:
            return major == 1
        if self is VersionSelector.VERSION_2:
            return major == 2
        return major in (1, 2)


@dataclass(frozen=True)
class ServerSettings:
    #: Sent in INITIATE and, unlike bitcoinj, enforced on the contract (§13 item 2).
    min_channel_size: int = 100_000
    #: Sent as ``min_payment`` and enforced on the initial payment.
    min_payment: int = C.DEFAULT_MIN_PAYMENT
    min_time_window: int = C.DEFAULT_MIN_TIME_WINDOW
    max_time_window: int = C.DEFAULT_MAX_TIME_WINDOW
    versions: frozenset[int] = C.SERVER_MAJOR_VERSIONS
    #: Settlement fee rate in sat/kB (never below the 1000 sat/kB floor). The floor by default,
    #: not bitcoinj's 100000: a settlement (about 340 bytes) then costs about 340 sat, which the
    #: smallest initial payment this server accepts (``min_payment``, 1000) can pay, so every
    #: channel its own ``min_channel_size`` allows can be settled (at 100000 sat/kB it would
    #: cost about 34000 sat, a third of a minimum channel).
    fee_rate: int = C.FEE_RATE_FLOOR
    #: Seconds a connection may take to open a channel (and be idle before that).
    handshake_timeout: float = 30.0
    #: Seconds an open channel connection may stay idle; None keeps it forever (bitcoinj).
    idle_timeout: float | None = None
    #: Seconds before E at which the server settles on its own.
    settle_offset: int = C.SERVER_SETTLE_OFFSET
    #: Connections one peer address may hold open at once; more are closed at once. 0: no limit.
    max_connections_per_address: int = 16
    #: Connections (each a handshake) one peer address may open per ``rate_window``; more get
    #: ERROR{OTHER} and a close until the window ends. 0: no limit.
    max_handshakes_per_address: int = 120
    #: Seconds of the handshake-rate window.
    rate_window: float = 60.0
    #: Seconds a channel whose contract the node refused (and that nothing else paid) is kept
    #: before it is pruned, if the chain does not know its contract then (issue #14 item 3).
    prune_after: float = 2 * 86400.0

    def __post_init__(self) -> None:
        if not C.HARD_MIN_TIME_WINDOW <= self.min_time_window <= self.max_time_window:
            raise ValueError(
                f"need {C.HARD_MIN_TIME_WINDOW} <= min_time_window <= max_time_window, "
                f"got {self.min_time_window} and {self.max_time_window}"
            )
        if not self.versions or not set(self.versions) <= C.SERVER_MAJOR_VERSIONS:
            raise ValueError(f"versions must be a non-empty subset of {{1, 2}}, got {set(self.versions)}")
        if self.min_channel_size < 1 or self.min_payment < 0:
            raise ValueError("min_channel_size must be positive and min_payment non-negative")
        if self.fee_rate < 0:
            raise ValueError("fee_rate must be non-negative")
        if self.max_connections_per_address < 0 or self.max_handshakes_per_address < 0:
            raise ValueError("per-address limits must be non-negative (0: no limit)")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        if self.prune_after <= 0:
            raise ValueError("prune_after must be positive")

    @property
    def effective_fee_rate(self) -> int:
        return max(self.fee_rate, C.FEE_RATE_FLOOR)

    def clamp_time_window(self, requested: int) -> int:
        """§10.1: values of 2^63 and above read as negative in bitcoinj and clamp up."""
        if requested >= 2**63 or requested < self.min_time_window:
            return self.min_time_window
        return min(requested, self.max_time_window)


@dataclass(frozen=True)
class ClientSettings:
    #: V: the value locked into a new channel, and the largest min_accepted_channel_size accepted.
    channel_value: int
    time_window: int = C.DEFAULT_CLIENT_TIME_WINDOW
    #: Largest min_payment accepted from a server.
    max_min_payment: int = C.DEFAULT_MIN_PAYMENT
    versions: VersionSelector = VersionSelector.VERSION_2_ALLOW_1
    #: Contract fee rate in sat/kB.
    fee_rate: int = C.BITCOINJ_DEFAULT_FEE_RATE
    #: Seconds to connect and open the channel.
    handshake_timeout: float = 30.0
    #: Seconds to wait for a PAYMENT_ACK or the server's CLOSE; None waits forever (bitcoinj).
    reply_timeout: float | None = 60.0
    #: Seconds ``paychan pay`` waits for the server's settlement once a payment has exhausted
    #: the channel (the server settles by itself, §7.3 step 4; stock bitcoinj only closes the
    #: socket, so it is looked for on the chain). Not seen by then: the record is left open with
    #: a note, for ``paychan watch`` to finish.
    settlement_wait: float = 60.0
    #: Payments that may wait for their PAYMENT_ACK at once on one channel (pipelining, our
    #: extension: each its own UPDATE_PAYMENT, its c stored before it leaves). 1 is bitcoinj's
    #: client: a second ``pay()`` before the ack is refused. A stock bitcoinj server handles
    #: more in order; ours takes up to ``C.MAX_PAYMENTS_IN_FLIGHT`` per connection.
    max_in_flight: int = 1

    def __post_init__(self) -> None:
        if self.channel_value <= 0 or self.channel_value > C.MAX_MONEY:
            raise ValueError(f"channel_value out of range: {self.channel_value}")
        if not 1 <= self.max_in_flight <= C.MAX_PAYMENTS_IN_FLIGHT:
            raise ValueError(f"max_in_flight must be 1 to {C.MAX_PAYMENTS_IN_FLIGHT}")
        if self.settlement_wait < 0:
            raise ValueError("settlement_wait must be >= 0")
        if self.time_window < 0:
            raise ValueError("time_window must be >= 0")
        if self.max_min_payment < 0:
            raise ValueError("max_min_payment must be >= 0")

    def accepts_expiry(self, expiry: int, now: int) -> bool:
        """bitcoinj's TCP client rule (§10.1): no lower bound."""
        return expiry <= now + self.time_window + C.CLIENT_EXPIRY_SLACK
