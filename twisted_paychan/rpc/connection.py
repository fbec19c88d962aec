"""
A JSON-RPC client for Bitcoin Core (and our embedded node) over treq.

Credentials come from the URL (``http://user:password@host:port``) or from a cookie file
(bitcoind's ``.cookie``, or ours), which is read when first needed and read again after a 401,
since a restarted node writes a new one. Requests are JSON-RPC "1.0" (Core's legacy mode, which
every Core version speaks); an error reply arrives with an HTTP error status and a JSON body,
which is read all the same.

Failures are one of: :class:`RpcError` (the node answered with an error object),
:class:`RpcAuthError` (401/403), :class:`RpcConnectionError` (cannot connect, connection lost,
timeout) or :class:`RpcProtocolError` (an answer that is not JSON-RPC). Messages name the node
by ``host:port``, never with its password.
"""

from __future__ import annotations

import base64
import itertools
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from urllib.parse import unquote, urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IConsumer
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from twisted_paychan.rpc import jsonenc
from twisted_paychan.rpc.auth import COOKIE_USER, read_cookie
from twisted_paychan.rpc.errors import RpcError
from twisted_paychan.twisted_private import HTTP11ClientFactory, RequestNotSent

log = Logger()

#: Seconds to wait for a reply. scantxoutset on mainnet can take minutes; raise it for that.
DEFAULT_TIMEOUT = 300.0
#: Calls that must not be sent twice: a request lost on a stale kept-alive connection is
#: retried once on a fresh one, except these (each would mine again).
NOT_RETRIED = frozenset({"generatetoaddress", "generatetodescriptor", "generateblock", "generate", "stop"})


class _QuietHTTPFactory(HTTP11ClientFactory):
    """The pool's connection factory without its log line at each connection's start and end:
    a follower polling a node opens one every few seconds."""

    noisy = False


class RpcConnectionError(Exception):
    """The node could not be reached, or the connection failed mid-request."""


class RpcAuthError(Exception):
    """The node refused our credentials (HTTP 401 or 403)."""


class RpcProtocolError(Exception):
    """The answer was not JSON-RPC (wrong port? not a Bitcoin node?)."""


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.port else f"{parts.scheme}://{parts.hostname}"


#: Nodes whose URL carried a password, warned about once per process each.
_WARNED_URL_PASSWORD: set[str] = set()


class RpcConnection:
    """Calls to one node. ``reactor`` does the network I/O (and the timeouts).

    Credentials, first found wins: ``credentials`` (a user and a password read from a file),
    ``user:password@`` in the URL (works, but warns once: argv is public), the cookie file.
    No message ever contains the password or the cookie: the node is named without them."""

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        cookie_path: Union[str, Path, None] = None,
        credentials: Optional[tuple[str, str]] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 4,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an RPC URL (expected http://[user:password@]host:port): {_redact(url)!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in RPC URL {_redact(url)!r}") from None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = f"{host}:{port}" if port else host
        self.url = f"{parts.scheme}://{netloc}{parts.path or '/'}"
        self.name = f"{parts.scheme}://{netloc}"
        self._reactor = reactor
        self._timeout = timeout
        self._cookie_path = None if cookie_path is None else Path(cookie_path).expanduser()
        self._auth: Optional[bytes] = None
        if credentials is not None:
            self._auth = self._basic(*credentials)
        elif parts.username is not None:
            self._auth = self._basic(unquote(parts.username), unquote(parts.password or ""))
        user = credentials[0] if credentials is not None else unquote(parts.username or "")
        self._cookie_user = user == COOKIE_USER
        if parts.password and self.name not in _WARNED_URL_PASSWORD:
            _WARNED_URL_PASSWORD.add(self.name)
            log.warn("the RPC URL for {node} carries a password, which every user of this machine can see "
                     "in the process list; use --rpc-user with --rpc-password-file, or --rpc-cookie",
                     node=self.name)
        self._ids = itertools.count(1)
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool._factory = _QuietHTTPFactory  # no "Starting factory" line per new connection
        self._pool.maxPersistentPerHost = max_connections
        self._pool.retryAutomatically = False  # a retried sendrawtransaction is still fine, but say what happened
        self._http = HTTPClient(Agent(reactor, pool=self._pool))

    @staticmethod
    def _basic(user: str, password: str) -> bytes:
        return b"Basic " + base64.b64encode(f"{user}:{password}".encode())

    def _load_cookie(self) -> None:
        assert self._cookie_path is not None
        try:
            credentials = read_cookie(self._cookie_path)
        except OSError as e:
            raise RpcAuthError(f"cannot read the RPC cookie {self._cookie_path}: {e.strerror or e}") from None
        except ValueError as e:
            raise RpcAuthError(str(e)) from None
        self._auth = credentials.header()

    # -- calls -----------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> "Deferred[Any]":
        """The result of ``method(*params)``; fails with RpcError if the node says so."""
        return Deferred.fromCoroutine(self._call(method, list(params)))

    async def _call(self, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        reply = await self._post(
            {"jsonrpc": "1.0", "id": request_id, "method": method, "params": params}, retry=method not in NOT_RETRIED
        )
        return _result_of(reply, method)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> "Deferred[list[Any]]":
        """Several calls in one HTTP request; each item of the list is the call's result or
        the RpcError it failed with (in the order of ``calls``)."""
        return Deferred.fromCoroutine(self._batch(calls))

    async def _batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        body = [{"jsonrpc": "1.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in zip(ids, calls)]
        replies = await self._post(body, retry=not any(m in NOT_RETRIED for m, _ in calls))
        if not isinstance(replies, list):
            if isinstance(replies, dict) and replies.get("error"):
                raise _error_of(replies["error"])
            raise RpcProtocolError(f"{self.name} answered a batch with {type(replies).__name__}")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        results: list[Any] = []
        for request_id, (method, _) in zip(ids, calls):
            reply = by_id.get(request_id)
            if reply is None:
                raise RpcProtocolError(f"{self.name} left call {method} out of a batch reply")
            try:
                results.append(_result_of(reply, method))
            except RpcError as e:
                results.append(e)
        return results

    async def _post(self, payload: Any, retry: bool) -> Any:
        if self._auth is None and self._cookie_path is not None:
            self._load_cookie()
        body = jsonenc.dumps(payload).encode()
        status, content = await self._send(body, retry)
        if status == 401 and self._cookie_path is not None:
            self._load_cookie()  # the node may have restarted with a new cookie
            status, content = await self._send(body, retry)
        if status in (401, 403):
            if self._auth is None:
                hint = " (no credentials given: use user:password@ in the URL or a cookie file)"
            elif self._cookie_path is None and self._cookie_user:
                # A cookie's contents passed as a password go stale at the node's next start.
                hint = " (a cookie's password changes at every start of the node: give the cookie file with --rpc-cookie)"
            else:
                hint = ""
            raise RpcAuthError(f"{self.name} refused our RPC credentials (HTTP {status}){hint}")
        try:
            return jsonenc.loads(content)
        except (ValueError, UnicodeDecodeError):
            snippet = content[:80].decode(errors="replace").strip()
            raise RpcProtocolError(f"{self.name} did not answer JSON-RPC (HTTP {status}: {snippet!r})") from None

    async def _send(self, body: bytes, retry: bool) -> tuple[int, bytes]:
        try:
            return await self._send_once(body)
        except (ResponseNeverReceived, RequestNotSent, RequestTransmissionFailed) as e:
            if not retry:
                raise RpcConnectionError(f"cannot reach {self.name}: {_describe(e)}") from None
            log.debug("request to {node} lost ({error}); retrying once", node=self.name, error=_describe(e))
        try:
            return await self._send_once(body)
        except (ResponseNeverReceived, RequestNotSent, RequestTransmissionFailed) as e:
            raise RpcConnectionError(f"cannot reach {self.name}: {_describe(e)}") from None

    async def _send_once(self, body: bytes) -> tuple[int, bytes]:
        headers = Headers({b"content-type": [b"application/json"]})
        if self._auth is not None:
            headers.setRawHeaders(b"authorization", [self._auth])
        try:
            response = await self._http.post(
                self.url, data=_BytesProducer(body), headers=headers, timeout=self._timeout, reactor=self._reactor
            )
            content = await treq.content(response)
        except (ConnectError, ConnectionClosed) as e:
            raise RpcConnectionError(f"cannot reach {self.name}: {_describe(e)}") from None
        except ResponseFailed as e:
            if isinstance(e, ResponseNeverReceived):
                raise
            raise RpcConnectionError(f"cannot reach {self.name}: {_describe(e)}") from None
        except CancelledError:
            raise RpcConnectionError(f"{self.name} did not answer within {self._timeout:g} s") from None
        return int(response.code), content

    def close(self) -> "Deferred[None]":
        """Close idle connections (in-flight calls complete)."""
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body written in one go. (treq's default producer for bytes runs on the global
    cooperator, hence on the global reactor; this connection may be on another one.)"""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> "Deferred[None]":
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _describe(e: Exception) -> str:
    if isinstance(e, (ResponseFailed, RequestTransmissionFailed)):
        reasons = [r.getErrorMessage() for r in e.reasons]
        return "connection lost (" + "; ".join(reasons) + ")"
    return str(e) or type(e).__name__


def _error_of(error: Any) -> RpcError:
    if isinstance(error, dict):
        try:
            code = int(error.get("code", -1))
        except (TypeError, ValueError):
            code = -1
        return RpcError(code, str(error.get("message", "")))
    return RpcError(-1, str(error))


def _result_of(reply: Any, method: str) -> Any:
    if not isinstance(reply, dict):
        raise RpcProtocolError(f"reply to {method} is not a JSON-RPC object")
    error = reply.get("error")
    if error is not None:
        raise _error_of(error)
    if "result" not in reply:
        raise RpcProtocolError(f"reply to {method} has neither result nor error")
    return reply["result"]
