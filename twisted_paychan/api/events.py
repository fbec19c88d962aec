"""
Channel events for ``GET /v1/events``: a bounded replay buffer and the server-sent event stream.

Every ``ChannelEvent`` the manager publishes gets the next id of this run (``<boot>-<n>``: the
boot part changes at every start, so an id from an earlier run is recognised) and goes into a
buffer of the last ``capacity`` events. A client that reconnects with ``Last-Event-ID`` (the
header ``EventSource`` sends by itself, or ``?last_event_id=``) first gets every buffered event
after that id, then the live ones; an id of an earlier run, or older than the buffer, gets the
whole buffer (preceded by a ``gap`` event when events were lost in between).

Each event is one SSE ``message``: ``id:`` and one ``data:`` line of JSON (``id``, ``kind``,
``contract_txid``, ``note``, ``increase``, ``total``, ``time``); a comment line every
``keepalive`` seconds keeps proxies from closing an idle stream. A slow reader cannot hold the
server's memory: the transport's buffer is not watched, but each write is one small line and a
client that stops reading is dropped by TCP.
"""

from __future__ import annotations

import collections
import json
import secrets
from typing import Callable, Iterable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.server_lifecycle_events import ChannelEvent
from twisted_paychan.net.subscribers import Subscribers

DEFAULT_CAPACITY = 10_000


#: What the buffer keeps of an event: (seq, time, kind, contract txid, note, increase, total).
#: A tuple of plain values, which the garbage collector stops tracking: ten thousand kept events
#: add nothing to each collection's work, as ten thousand objects would on every payment.
Kept = tuple[int, float, str, bytes, str, int, int]


class NumberedEvent:
    """A kept event with its id, as a stream sends it; made only when one does, and its JSON
    once."""

    __slots__ = ("seq", "boot", "kept", "_data")

    def __init__(self, boot: str, kept: Kept) -> None:
        self.seq = kept[0]
        self.boot = boot
        self.kept = kept
        self._data: Optional[str] = None

    @property
    def event_id(self) -> str:
        return f"{self.boot}-{self.seq}"

    @property
    def data(self) -> str:
        if self._data is None:
            _, time, kind, txid, note, increase, total = self.kept
            self._data = json.dumps({
                "id": self.event_id,
                "kind": kind,
                "contract_txid": display_hex(txid),
                "note": note,
                "increase": increase,
                "total": total,
                "time": time,
            }, separators=(",", ":"))
        return self._data


class EventLog:
    """The last ``capacity`` channel events, numbered, and who streams them live."""

    def __init__(self, clock: IReactorTime, capacity: int = DEFAULT_CAPACITY, boot: Optional[str] = None) -> None:
        self.clock = clock
        self.boot = boot or secrets.token_hex(4)
        self._events: collections.deque[Kept] = collections.deque(maxlen=capacity)
        self._seq = 0
        #: The open streams; one that fails is logged and the others still hear the event.
        self._listeners: Subscribers[NumberedEvent] = Subscribers()

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, event: ChannelEvent) -> None:
        """Number and keep ``event``, and hand it to every live stream (a manager subscriber)."""
        self._seq += 1
        kept = (self._seq, self.clock.seconds(), event.kind.value, event.contract_txid, event.note, event.increase,
                event.total)
        self._events.append(kept)
        if not self._listeners:
            return
        self._listeners.notify(NumberedEvent(self.boot, kept))

    def listen(self, listener: Callable[[NumberedEvent], None]) -> Callable[[], None]:
        """Hand ``listener`` every event from now on; returns what stops it."""
        return self._listeners.add(listener)

    def since(self, last_event_id: Optional[str]) -> tuple[bool, list[NumberedEvent]]:
        """(whether events were lost, the buffered events after ``last_event_id``)."""
        if not last_event_id:
            return False, []  # a new stream starts from now
        events = [NumberedEvent(self.boot, kept) for kept in self._events]
        boot, _, number = last_event_id.rpartition("-")
        try:
            seq = int(number)
        except ValueError:
            seq = -1
        if boot != self.boot or seq < 0 or seq > self._seq:
            return True, events  # another run's id: everything this run still has
        oldest = events[0].seq if events else self._seq + 1
        lost = seq + 1 < oldest
        return lost, [e for e in events if e.seq > seq]


def _frame(event: NumberedEvent) -> bytes:
    return f"id: {event.event_id}\ndata: {event.data}\n\n".encode()


class EventStream:
    """One ``GET /v1/events`` response, open until the client goes."""

    log = Logger()

    def __init__(self, request: Request, log: EventLog, last_event_id: Optional[str], keepalive: float) -> None:
        self.request = request
        self.events = log
        self.keepalive = keepalive
        self._timer: Optional[IDelayedCall] = None
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        lost, missed = log.since(last_event_id)
        self._stop = log.listen(self._send)
        request.notifyFinish().addBoth(self._finished)
        request.write(b"retry: 2000\n\n")
        if lost:
            request.write(f"event: gap\ndata: {json.dumps({'after': last_event_id})}\n\n".encode())
        self._write_all(missed)
        self._arm()

    def _write_all(self, events: Iterable[NumberedEvent]) -> None:
        self.request.write(b"".join(_frame(e) for e in events))

    def _send(self, event: NumberedEvent) -> None:
        self.request.write(_frame(event))

    def _arm(self) -> None:
        self._timer = self.events.clock.callLater(self.keepalive, self._ping)

    def _ping(self) -> None:
        self.request.write(b": keepalive\n\n")
        self._arm()

    def _finished(self, _: object) -> None:
        self._stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def close(self) -> None:
        """End the stream (the server stops)."""
        if self._timer is not None:
            self._finished(None)
            self.request.finish()


__all__ = ["EventLog", "EventStream", "NumberedEvent", "NOT_DONE_YET", "DEFAULT_CAPACITY"]
