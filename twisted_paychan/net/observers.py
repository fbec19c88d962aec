"""
What an operator's instruments (``twisted_paychan.api.metrics``) may watch of the server's
connections, without the connections knowing who watches.

A :class:`ServerObserver` is given to the ``ServerChannelManager`` (``manager.observer``); each
connection it makes carries it. With none (the default) every hook is one ``is None`` test, so the
payment hot path pays nothing for instruments nobody asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.wire.messages import TwoWayChannelMessage

if TYPE_CHECKING:
    from twisted_paychan.net.server_channel import ServerChannel


class ServerObserver(Protocol):
    def connected(self, connection: "ServerChannel") -> None:
        """A client connected (its channel object exists)."""

    def disconnected(self, connection: "ServerChannel", reason: CloseReason) -> None:
        """The connection ended, for ``reason``."""

    def update_received(self, connection: "ServerChannel") -> None:
        """An UPDATE_PAYMENT arrived on ``connection`` (before the machine checks it)."""

    def error_received(self, connection: "ServerChannel", code: int) -> None:
        """The client sent ERROR{code}."""

    def sent(self, connection: "ServerChannel", message: TwoWayChannelMessage) -> None:
        """``message`` was written to ``connection`` (PAYMENT_ACK, ERROR, ...)."""

    def settlement_broadcast(self, contract_txid: bytes) -> None:
        """The node accepted a channel's settlement."""
