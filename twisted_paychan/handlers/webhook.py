"""
The ``webhook:URL`` payment handler: each channel event is POSTed to ``URL`` as one JSON object,
and the answer to a payment decides whether it is acknowledged.

Events, in the order the server hears them (``IServerHandler``), one POST at a time per
connection, so the receiver sees them in that order too::

    {"event": "opened",  "contract_txid": HEX, "peer": "host:port"}
    {"event": "payment", "contract_txid": HEX, "peer": ..., "increase": SAT, "total": SAT,
     "info": HEX or null}
    {"event": "closed",  "contract_txid": HEX, "peer": ..., "reason": "CONNECTION_CLOSED"}

(``contract_txid`` in display order, as block explorers show it; ``closed`` only for a
connection that opened a channel.) A payment answered with a 2xx status is accepted: the body,
if any (up to ``MAX_ACK_INFO`` bytes), becomes the PAYMENT_ACK's info. Any other status, no
answer within ``timeout`` seconds (on the injected clock) or a failed request refuses it:
``ERROR{OTHER}`` to the client, no PAYMENT_ACK, the connection closes (UPDATE_PAYMENT_FAILED).

A refused payment was already stored (the server stores every payment before anyone hears of
it, spec §7.3), and the client stored its side before sending it: it is in the channel's
settlement all the same. Refusing says "no service for it", not "no money moved". The initial
payment (CHANNEL_OPEN answers it) and a payment stored after the connection ended have no
PAYMENT_ACK to give or withhold: they are POSTed like the others, and the answer is ignored.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.handlers import HandlerArgumentError, HandlerFactory, IPaymentHandlerMaker
from twisted_paychan.handlers.log import peer_name
from twisted_paychan.net.server_channel import IServerHandler

#: Seconds a payment waits for the webhook's answer before it is refused.
DEFAULT_TIMEOUT = 10.0
#: The longest answer body used as PAYMENT_ACK info (a frame holds 32767 bytes in all).
MAX_ACK_INFO = 16_384

Event = dict[str, object]


class WebhookRefused(Exception):
    """The webhook did not accept a payment; the message says how (the client sees it)."""


class WebhookClient:
    """POSTs events to one URL with treq, on ``reactor``; timeouts on ``clock``."""

    log = Logger()

    def __init__(self, reactor: Any, url: str, clock: Optional[IReactorTime] = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        self.url = url
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.timeout = timeout
        # Not persistent: nothing is left open between events, nothing to close at shutdown.
        self._http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    def post(self, event: Event) -> defer.Deferred[Optional[bytes]]:
        """The 2xx answer's body (None if empty), or a :class:`WebhookRefused` failure."""
        from twisted.web.http_headers import Headers

        body = json.dumps(event, separators=(",", ":")).encode()
        d: defer.Deferred[Any] = self._http.post(self.url, data=body,
                                                 headers=Headers({b"Content-Type": [b"application/json"]}))
        d.addCallback(self._answered)
        # Whatever the cancelled request failed with (treq wraps it), a timeout is a timeout.
        d.addTimeout(self.timeout, self.clock, onTimeoutCancel=self._timed_out)
        return d.addErrback(self._refused)

    def _timed_out(self, result: object, timeout: float) -> Failure:
        return Failure(WebhookRefused(f"the webhook did not answer within {timeout:g} s"))

    def _answered(self, response: Any) -> defer.Deferred[Optional[bytes]]:
        from treq import content

        def read(body: bytes) -> Optional[bytes]:
            if not 200 <= response.code < 300:
                raise WebhookRefused(f"the webhook answered {response.code}")
            if len(body) > MAX_ACK_INFO:
                raise WebhookRefused(f"the webhook's answer is longer than {MAX_ACK_INFO} bytes")
            return body or None

        d: defer.Deferred[bytes] = content(response)
        return d.addCallback(read)

    def _refused(self, failure: Failure) -> Failure:
        if not failure.check(WebhookRefused):
            return Failure(WebhookRefused(f"the webhook could not be reached: {failure.getErrorMessage()}"))
        return failure


@implementer(IServerHandler)
class WebhookHandler:
    """One connection's events, POSTed one after the other."""

    log = Logger()

    def __init__(self, client: WebhookClient, peer: str) -> None:
        self.client = client
        self.peer = peer
        self.contract_txid: Optional[str] = None
        self._turn: defer.Deferred[None] = defer.succeed(None)

    def _in_turn(self, event: Event) -> defer.Deferred[Optional[bytes]]:
        """POST ``event`` once the one before it has been answered (or has failed)."""
        turn, done = self._turn, defer.Deferred[None]()
        self._turn = done

        def post(_: None) -> defer.Deferred[Optional[bytes]]:
            def finished(result: Any) -> Any:
                done.callback(None)
                return result

            return self.client.post(event).addBoth(finished)

        return turn.addCallback(post)

    def _logged(self, d: defer.Deferred[Optional[bytes]], what: str) -> None:
        d.addErrback(lambda f: self.log.warn("channel {txid}: webhook for {what}: {why}", txid=self.contract_txid,
                                             what=what, why=f.getErrorMessage()))

    def channel_opened(self, contract_txid: bytes) -> None:
        self.contract_txid = display_hex(contract_txid)
        self._logged(self._in_turn({"event": "opened", "contract_txid": self.contract_txid, "peer": self.peer}),
                     "opened")

    def payment_received(self, contract_txid: bytes, increase: int, total: int,
                         info: Optional[bytes]) -> defer.Deferred[Optional[bytes]]:
        return self._in_turn({
            "event": "payment", "contract_txid": self.contract_txid or display_hex(contract_txid),
            "peer": self.peer, "increase": increase, "total": total,
            "info": info.hex() if info is not None else None,
        })

    def channel_closed(self, reason: CloseReason) -> None:
        if self.contract_txid is None:
            return
        self._logged(self._in_turn({"event": "closed", "contract_txid": self.contract_txid, "peer": self.peer,
                                    "reason": reason.name}), "closed")


@implementer(IPlugin, IPaymentHandlerMaker)
class WebhookHandlerMaker:
    name = "webhook"
    usage = "webhook:URL"
    description = "POST each channel event to URL as JSON; a payment is acknowledged only on a 2xx answer."

    def check(self, arg: Optional[str]) -> None:
        parts = urlsplit(arg or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HandlerArgumentError(f"the webhook handler needs an http(s) URL: --handler webhook:URL, "
                                       f"not {arg!r}")

    def make(self, arg: Optional[str], reactor: Any) -> HandlerFactory:
        assert arg is not None, "check() first"
        client = WebhookClient(reactor, arg)

        def handler_for(address: Optional[IAddress]) -> IServerHandler:
            return WebhookHandler(client, peer_name(address))

        return handler_for
