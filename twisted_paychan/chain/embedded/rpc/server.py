"""
The embedded node's JSON-RPC server: Bitcoin Core's HTTP front end on twisted.web.

:class:`RpcResource` does what Core's ``HTTPReq_JSONRPC`` does: POST only (405 otherwise),
basic authentication against the cookie or the configured user (401 with
``WWW-Authenticate``), then the JSON-RPC rules of ``protocol``. It answers on every path, as
Core does for ``/`` and ``/wallet/<name>``.

:func:`serve_node` starts one on an endpoint string and returns the :class:`RpcServer`, which
knows its URL and credentials and removes the cookie when stopped. The node itself belongs to
the caller (``service.NodeRpcService`` owns both, for the command line and twistd).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Final, Optional, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from twisted_paychan import logs
from twisted_paychan.chain.embedded.node import RegtestNode
from twisted_paychan.chain.embedded.rpc.methods import NodeMethods
from twisted_paychan.rpc import protocol
from twisted_paychan.rpc.auth import WWW_AUTHENTICATE, Cookie, Credentials

log = Logger()

#: Where bitcoind listens for regtest RPC, and so do we by default (loopback only).
DEFAULT_ENDPOINT: Final = "tcp:18443:interface=127.0.0.1"
#: Core refuses request bodies above this (MAX_SIZE in its HTTP server).
MAX_BODY_SIZE: Final = 32 * 1024 * 1024


class RpcResource(Resource):
    isLeaf = True

    def __init__(self, methods: NodeMethods, credentials: Credentials, call_later: Callable[..., Any]) -> None:
        Resource.__init__(self)
        self.methods = methods
        self.credentials = credentials
        self._call_later = call_later

    def render(self, request: Request) -> bytes:
        if request.method != b"POST":
            request.setResponseCode(405)
            return b"JSONRPC server handles only POST requests"
        if not self.credentials.check_header(request.getHeader(b"authorization")):
            peer = request.getClientAddress()
            log.warn(
                "RPC: incorrect password attempt from {host}:{port}",
                host=getattr(peer, "host", "?"),
                port=getattr(peer, "port", "?"),
            )
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", WWW_AUTHENTICATE.encode())
            return b""
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_SIZE:
            request.setResponseCode(413)
            return b""
        assert request.content is not None
        reply = protocol.handle(request.content.read(), self.methods.dispatch)
        after, self.methods.after_reply = self.methods.after_reply, []
        if after:
            request.notifyFinish().addBoth(lambda _: [self._call_later(0, call) for call in after])
        request.setResponseCode(reply.status)
        if reply.body is None:
            return b""
        request.setHeader(b"content-type", b"application/json")
        return reply.body


class _QuietSite(Site):
    """A Site whose access log goes to debug level: RPC clients poll every few seconds."""

    def __init__(self, resource: Resource, reactor: Any) -> None:
        Site.__init__(self, resource, reactor=reactor)

    def log(self, request: Any) -> None:
        if not logs.verbose:  # once per request: only when asked for (see ``twisted_paychan.logs``)
            return
        log.debug(
            "{method} {uri} {code}",
            method=request.method.decode(errors="replace"),
            uri=request.uri.decode(errors="replace"),
            code=request.code,
        )


class RpcServer:
    """A listening RPC server; :meth:`stop` closes the port and removes the cookie."""

    def __init__(
        self, port: IListeningPort, connections: WrappingFactory, credentials: Credentials, cookie: Optional[Cookie]
    ) -> None:
        self.port = port
        self._connections = connections
        self.credentials = credentials
        self.cookie = cookie

    @property
    def host(self) -> str:
        return str(getattr(self.port.getHost(), "host", "127.0.0.1"))

    @property
    def port_number(self) -> int:
        return int(getattr(self.port.getHost(), "port", 0))

    @property
    def url(self) -> str:
        """``http://host:port`` (no credentials)."""
        return f"http://{self.host}:{self.port_number}"

    def stop(self) -> "Deferred[None]":
        """Stop listening, close open connections (kept-alive clients must notice), remove
        the cookie."""
        if self.cookie is not None:
            self.cookie.remove()
        for connection in list(self._connections.protocols):
            connection.transport.loseConnection()
        stopped = self.port.stopListening()
        return stopped if isinstance(stopped, Deferred) else succeed(None)


def serve_node(
    reactor: Any,
    node: RegtestNode,
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    user: Optional[str] = None,
    password: Optional[str] = None,
    cookie_dir: Union[str, Path, None] = None,
    fee_rate: Optional[int] = None,
    on_stop: Optional[Callable[[], Any]] = None,
) -> "Deferred[RpcServer]":
    """Serve ``node`` over JSON-RPC on ``endpoint`` (a Twisted endpoint string).

    With ``user`` and ``password``, only they are accepted; otherwise a fresh cookie is written
    to ``cookie_dir`` (default: the node's data directory). ``fee_rate`` (sat/kB) is what
    ``estimatesmartfee`` answers; ``on_stop`` is called after the reply to ``stop``.
    """
    if (user is None) != (password is None):
        raise ValueError("give both an RPC user and a password, or neither (to use a cookie)")
    cookie: Optional[Cookie] = None
    if user is not None and password is not None:
        credentials = Credentials(user, password)
    else:
        cookie = Cookie.write(node.datadir if cookie_dir is None else cookie_dir)
        credentials = cookie.credentials
    methods = NodeMethods(node, fee_rate=fee_rate, on_stop=on_stop)
    site = _QuietSite(RpcResource(methods, credentials, reactor.callLater), reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    connections = WrappingFactory(site)  # knows the open connections, so stop() can close them
    connections.noisy = False

    async def listen() -> RpcServer:
        try:
            port = await serverFromString(reactor, endpoint).listen(connections)
        except BaseException:
            if cookie is not None:
                cookie.remove()
            raise
        server = RpcServer(port, connections, credentials, cookie)
        log.info("JSON-RPC for the regtest node on {url}", url=server.url)
        return server

    return Deferred.fromCoroutine(listen())
