"""
The channel store role. One interface, two implementations (``memory``, ``sqlite``), one
conformance suite (``tests/store/store_conformance.py``).
"""

from __future__ import annotations

from zope.interface import Interface

from twisted_paychan.channel.records import ServerChannelState


class IChannelStore(Interface):
    """Durable records of both sides' channels.

    Every write returns a Deferred that fires (with None) only when the write is durable; it
    fails if the write could not be made, and the caller must then not acknowledge or send.
    Reads return Deferreds too, so a store may live in another thread or process.
    """

    # -- server side ------------------------------------------------------------------------

    def add_server_channel(record):  # -> Deferred[None]
        """Store a new server record; fails with ``DuplicateChannel`` if its txid is stored."""

    def record_payment(contract_txid: bytes, best_value: int, signature: bytes):  # -> Deferred[None]
        """Durably set b and sig_C of an open server channel (the hot path: may be batched
        with other channels' payments into one commit, never delayed past its own). Fails with
        ``ChannelNotOpen`` unless the record is OPEN: a payment on a channel that is settling or
        whose contract failed is refused at the moment it would be stored."""

    def update_server_channel(record):  # -> Deferred[None]
        """Replace a stored server record (state changes, settlement)."""

    def set_server_state(contract_txid: bytes, state, note: str = ""):  # -> Deferred[None]
        """Change only a server record's state and note. Settlement starts with this (OPEN ->
        SETTLING), so that from then on payments are refused while every payment stored
        before it is in the record the settlement is built from."""

    def server_channel(contract_txid: bytes):  # -> Deferred[ServerChannelRecord | None]
        """The record, or None."""

    def server_channels():  # -> Deferred[list[ServerChannelRecord]]
        """Every server record, oldest first."""

    # -- client side ------------------------------------------------------------------------

    def add_client_channel(record):  # -> Deferred[None]
        """Store a new client record (with its signed refund) before the contract is sent."""

    def record_client_change(contract_txid: bytes, client_change: int):  # -> Deferred[None]
        """Durably set c before the payment that signs it is sent."""

    def update_client_channel(record):  # -> Deferred[None]
        """Replace a stored client record."""

    def client_channel(contract_txid: bytes):  # -> Deferred[ClientChannelRecord | None]
        """The record, or None."""

    def client_channels():  # -> Deferred[list[ClientChannelRecord]]
        """Every client record, oldest first."""

    def close():  # -> Deferred[None]
        """Finish pending writes and release the store."""


class StoreError(Exception):
    """A write could not be made durable."""


class DuplicateChannel(StoreError):
    """A record with this contract txid already exists."""


class UnknownChannel(StoreError):
    """No record with this contract txid."""


class ChannelNotOpen(StoreError):
    """The channel no longer takes payments (settling, settled, or its contract failed)."""

    def __init__(self, contract_txid: bytes, state: str) -> None:
        super().__init__(f"channel {contract_txid.hex()} is {state}")
        self.state = state


def check_payment(contract_txid: bytes, state: str, stored: int, best_value: int) -> None:
    """The rule every store applies to ``record_payment`` (given the stored state and b):
    payments only on an OPEN channel, and b never goes down."""
    if state != ServerChannelState.OPEN.value:
        raise ChannelNotOpen(contract_txid, state)
    if best_value < stored:
        raise StoreError(f"refusing to lower b from {stored} to {best_value}")


def check_change(stored: int, client_change: int) -> None:
    """The rule the SQLite store applies to ``record_client_change``: c never goes up."""
    if client_change > stored:
        raise StoreError(f"refusing to raise c from {stored} to {client_change}")
