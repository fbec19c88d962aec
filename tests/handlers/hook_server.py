"""A local twisted.web server standing in for an application's webhook: it records every JSON
event POSTed to it and answers each as the test says (a status and a body, or never)."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

#: (status, body) to answer with, or None to never answer.
Answer = Optional[tuple[int, bytes]]


class Hook(Resource):
    isLeaf = True

    def __init__(self, answer: Callable[[dict[str, Any]], Answer]) -> None:
        super().__init__()
        self.answer = answer
        self.events: list[dict[str, Any]] = []
        self.hanging: list[Any] = []
        self._waiting: list[tuple[Callable[[list[dict[str, Any]]], bool], defer.Deferred[None]]] = []

    def render_POST(self, request: Any) -> Any:
        assert request.getHeader(b"content-type") == b"application/json"
        event = json.loads(request.content.read())
        self.events.append(event)
        answer = self.answer(event)
        for pair in list(self._waiting):
            if pair[0](self.events):
                self._waiting.remove(pair)
                pair[1].callback(None)
        if answer is None:
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(answer[0])
        return answer[1]

    def until(self, condition: Callable[[list[dict[str, Any]]], bool]) -> defer.Deferred[None]:
        """Fires once the events received satisfy ``condition``."""
        if condition(self.events):
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((condition, d))
        return d


async def serve(hook: Hook) -> tuple[Any, str]:
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(hook))
    return port, f"http://127.0.0.1:{port.getHost().port}/events"
