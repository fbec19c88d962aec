"""
The channel store role. One interface, two implementations (``memory``, ``sqlite``), one
conformance suite (``tests/store/store_conformance.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Mapping, Optional

from twisted.internet.defer import Deferred
from zope.interface import Interface

from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)


@dataclass(frozen=True)
class ServerTotals:
    """What ``IChannelStore.server_totals`` answers."""

    #: Channels in each state (every state present, 0 when none).
    by_state: Mapping[ServerChannelState, int] = field(default_factory=dict)
    #: Value of the channels not yet back on chain to us: open, settling or stuck.
    value_locked: int = 0
    #: b summed over every channel stored: what clients paid us.
    paid_to_us: int = 0
    #: The earliest expiry E of an open channel, or None without one.
    next_open_expiry: Optional[int] = None


#: The states whose value is still locked in a contract (``ServerTotals.value_locked``).
LOCKED_STATES = frozenset({ServerChannelState.OPEN, ServerChannelState.SETTLING, ServerChannelState.STUCK})


def totals_of(records: Collection[ServerChannelRecord]) -> ServerTotals:
    """``ServerTotals`` computed from records in hand (the in-memory store; tests)."""
    by_state = {s: 0 for s in ServerChannelState}
    for r in records:
        by_state[r.state] += 1
    expiries = [r.expiry for r in records if r.state is ServerChannelState.OPEN]
    return ServerTotals(by_state, sum(r.value for r in records if r.state in LOCKED_STATES),
                        sum(r.best_value for r in records), min(expiries) if expiries else None)


def check_page(limit: Optional[int], offset: int) -> None:
    """Refuse a page no store could mean (every store answers the same)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, not {offset}")


class IChannelStore(Interface):
    """Durable records of both sides' channels.

    Every write returns a Deferred that fires (with None) only when the write is durable; it
    fails if the write could not be made, and the caller must then not acknowledge or send.
    Reads return Deferreds too, so a store may live in another thread or process.

    A record changes in two ways only: the money (b and sig_C, c) through the hot-path
    ``record_payment`` / ``record_client_change``, and everything else through a compare-and-set
    ``transition_*`` that names the state it expects. Every store applies the same rules to
    both (``store.rules``), so a write the in-memory double accepts is one SQLite accepts.
    """

    # -- server side ------------------------------------------------------------------------

    def add_server_channel(record: ServerChannelRecord) -> Deferred[None]:
        """Store a new server record; fails with ``DuplicateChannel`` if its txid is stored."""

    def record_payment(contract_txid: bytes, best_value: int, signature: bytes) -> Deferred[None]:
        """Durably set b and sig_C of an open server channel (the hot path: may be batched
        with other channels' payments into one commit, never delayed past its own). Fails with
        ``ChannelNotOpen`` unless the record is OPEN: a payment on a channel that is settling or
        whose contract failed is refused at the moment it would be stored; with ``StoreError``
        if b would go down."""

    def transition_server(contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                          /, **changes: object) -> Deferred[ServerChannelRecord]:
        """Compare-and-set: move a server record from state ``expected`` to ``new``, changing
        only ``changes`` (``channel.states.SERVER_TRANSITION_FIELDS``), and fire with the new
        record once durable. Fails with ``TransitionConflict`` (nothing written) when the stored
        state is not ``expected``, then with ``channel.states.IllegalTransition`` (a bug of the
        caller's, not a ``StoreError``) when the table has no edge ``expected -> new`` or a field
        may not change; with ``UnknownChannel`` before either. Payments still only in a payment
        log are in the returned record and stay stored.
        Settlement starts with OPEN -> SETTLING: payments stored before it are in the record it
        returns, and payments after it are refused (``ChannelNotOpen``)."""

    def prune_server_channel(contract_txid: bytes, best_value: int) -> Deferred[None]:
        """Delete, durably, a server record whose contract the node never took (issue #14 item
        3: such records would otherwise pile up for ever). A compare-and-set like the
        transitions: fails with ``NotPrunable`` (nothing deleted) unless the record is
        CONTRACT_FAILED, has no settlement, and its b is still ``best_value``, the b the caller
        decided on (a payment stored since is never deleted with it); with ``UnknownChannel``
        if there is no such record. Whether the contract is unknown to the chain is the
        caller's to check (``ServerChannelManager.prune``): the store cannot see the chain."""

    def server_channel(contract_txid: bytes) -> Deferred[Optional[ServerChannelRecord]]:
        """The record, or None."""

    def server_channels(
        states: Optional[Collection[ServerChannelState]] = None, limit: Optional[int] = None, offset: int = 0
    ) -> Deferred[list[ServerChannelRecord]]:
        """The server records in ``states`` (every state when None), oldest first. With
        ``limit``, only the newest ``limit`` of them after skipping the ``offset`` newest (a
        page of a long history, still oldest first). A server that runs for months holds every
        channel it ever had: whatever runs again and again asks for the states it needs."""

    def server_totals() -> Deferred["ServerTotals"]:
        """Counts and sums over every server record, computed by the store (an aggregate
        query), so that a metrics scrape or a status page costs the same after a million
        settled channels as after ten."""

    # -- client side ------------------------------------------------------------------------

    def add_client_channel(record: ClientChannelRecord) -> Deferred[None]:
        """Store a new client record (with its signed refund) before the contract is sent."""

    def record_client_change(contract_txid: bytes, client_change: int) -> Deferred[None]:
        """Durably set c before the payment that signs it is sent (the hot path, batched like
        ``record_payment``). Fails with ``StoreError`` if c would go up, and with
        ``ChannelNotOpen`` once the channel is settled or refunded."""

    def transition_client(contract_txid: bytes, expected: ClientChannelState, new: ClientChannelState,
                          /, **changes: object) -> Deferred[ClientChannelRecord]:
        """Compare-and-set on a client record, as ``transition_server`` (fields from
        ``channel.states.CLIENT_TRANSITION_FIELDS``)."""

    def client_channel(contract_txid: bytes) -> Deferred[Optional[ClientChannelRecord]]:
        """The record, or None."""

    def client_channels(state: Optional[ClientChannelState] = None) -> Deferred[list[ClientChannelRecord]]:
        """Every client record, oldest first; only those in ``state`` if given (a client that
        looks for a channel to resume asks for the open ones: its history can be long)."""

    def close() -> Deferred[None]:
        """Finish pending writes and release the store."""


class StoreError(Exception):
    """A write could not be made durable."""


class DuplicateChannel(StoreError):
    """A record with this contract txid already exists."""


class UnknownChannel(StoreError):
    """No record with this contract txid."""


class TransitionConflict(StoreError):
    """A compare-and-set transition found another state than the one it expected: another
    writer got there first. Nothing was written; re-read and decide again."""

    def __init__(self, contract_txid: bytes, expected: str, actual: str) -> None:
        super().__init__(f"channel {contract_txid.hex()} is {actual}, not {expected}")
        self.expected = expected
        self.actual = actual


class NotPrunable(StoreError):
    """``prune_server_channel`` found a record it must keep: not CONTRACT_FAILED, settled, or
    paid since the caller read it."""


class ChannelNotOpen(StoreError):
    """The channel no longer takes payments: a server channel that is not OPEN (settling,
    stuck, finished, or its contract failed), a client channel that is settled or refunded."""

    def __init__(self, contract_txid: bytes, state: str) -> None:
        super().__init__(f"channel {contract_txid.hex()} is {state}")
        self.state = state
