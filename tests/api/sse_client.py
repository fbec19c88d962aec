"""A minimal server-sent-events reader over a raw TCP connection (HTTP/1.0, so the body is not
chunked), which the test can cut at any moment as a real client that goes away would."""

from __future__ import annotations

import json
from typing import Optional
from urllib.parse import urlparse

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol


class SseReader(Protocol):
    def __init__(self, path: str, headers: dict[str, str]) -> None:
        self.path = path
        self.headers = headers
        self.raw = b""
        self.status: Optional[int] = None
        self.events: list[tuple[Optional[str], Optional[str], dict]] = []  # (id, event name, data)
        self._waiting: list[tuple[int, defer.Deferred]] = []
        self._header_done = False
        #: Fires when the connection is gone.
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        lines = [f"GET {self.path} HTTP/1.0", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in self.headers.items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        if not self._header_done:
            head, sep, rest = self.raw.partition(b"\r\n\r\n")
            if not sep:
                return
            self.status = int(head.split(b" ", 2)[1])
            self._header_done = True
            self.raw = rest
        while b"\n\n" in self.raw:
            block, self.raw = self.raw.split(b"\n\n", 1)
            event_id = name = data_line = None
            for line in block.decode().split("\n"):
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data_line = line[6:]
            if data_line is not None:
                self.events.append((event_id, name, json.loads(data_line)))
        for n, d in list(self._waiting):
            if len(self.events) >= n:
                self._waiting.remove((n, d))
                d.callback(self.events)

    def connectionLost(self, reason=None) -> None:
        self.ended.callback(None)

    def wait_for(self, n: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((n, d))
        self.dataReceived(b"")
        return d


async def open_stream(url: str, path: str, headers: dict[str, str]) -> SseReader:
    parsed = urlparse(url)
    reader = SseReader(path, headers)
    await connectProtocol(TCP4ClientEndpoint(reactor, parsed.hostname, parsed.port), reader)
    return reader
