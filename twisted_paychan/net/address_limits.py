"""
Per-address limits on the server's connections (PROTOCOL.md §13 item 28: bitcoinj has none).

Every connection starts a handshake, and a handshake costs the server a key, a signature (v1)
and a machine until it ends, so one peer is bounded twice: how many of its connections may be
open at once, and how many it may open per window (a minute by default). :class:`AddressLimits`
keeps only what the limits need: a count per address with a connection open, and a count per
address seen in the current window, both emptied as connections close and windows end (one
timer on the injected clock, armed only while some address is counted). A refused peer is
logged once per window, and the window's end logs how many of its attempts were refused.
"""

from __future__ import annotations

import enum
from typing import Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class Refusal(enum.Enum):
    #: More connections open at once than ``max_connections_per_address``.
    CONNECTIONS = "connections open at once"
    #: More connections opened in this window than ``max_handshakes_per_address``.
    HANDSHAKES = "handshakes per window"


class AddressLimits:
    """Admit or refuse connections by peer address; 0 for a limit means none."""

    log = Logger()

    def __init__(self, clock: IReactorTime, max_connections: int, max_handshakes: int,
                 window: float = 60.0) -> None:
        self.clock = clock
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.window = window
        #: Connections open now, per address (an address leaves when its last one closes).
        self.open: dict[str, int] = {}
        #: Connections admitted in this window, per address.
        self.opened: dict[str, int] = {}
        #: Attempts refused in this window, per address and limit.
        self.refused: dict[tuple[str, Refusal], int] = {}
        self._window_end: Optional[IDelayedCall] = None

    def admit(self, address: str) -> Optional[Refusal]:
        """Count a new connection from ``address`` and return None, or say which limit it
        exceeds (and count nothing but the refusal)."""
        refusal: Optional[Refusal] = None
        if self.max_connections and self.open.get(address, 0) >= self.max_connections:
            refusal = Refusal.CONNECTIONS
        elif self.max_handshakes and self.opened.get(address, 0) >= self.max_handshakes:
            refusal = Refusal.HANDSHAKES
        if refusal is not None:
            self._refuse(address, refusal)
            return refusal
        self.open[address] = self.open.get(address, 0) + 1
        if self.max_handshakes:
            self.opened[address] = self.opened.get(address, 0) + 1
            self._arm()
        return None

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` closed."""
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)

    def stop(self) -> None:
        """Cancel the window timer (the counts stay until the next window)."""
        if self._window_end is not None and self._window_end.active():
            self._window_end.cancel()
        self._window_end = None

    def _refuse(self, address: str, refusal: Refusal) -> None:
        key = (address, refusal)
        count = self.refused.get(key, 0) + 1
        self.refused[key] = count
        if count == 1:  # one line per peer per window; the window's end gives the count
            limit = self.max_connections if refusal is Refusal.CONNECTIONS else self.max_handshakes
            self.log.warn("refusing connections from {address}: more than {limit} {what}",
                          address=address, limit=limit, what=refusal.value)
        self._arm()

    def _arm(self) -> None:
        if self._window_end is None:
            self._window_end = self.clock.callLater(self.window, self._new_window)

    def _new_window(self) -> None:
        self._window_end = None
        for (address, refusal), count in sorted(self.refused.items(), key=lambda kv: kv[0][0]):
            self.log.warn("refused {count} connection(s) from {address} in the last {window:g} s "
                          "({what})", count=count, address=address, window=self.window, what=refusal.value)
        self.opened.clear()
        self.refused.clear()
