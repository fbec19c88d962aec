"""The private Twisted names ``twisted_private`` relies on are there, on both ends of a
real TCP connection. If a Twisted upgrade renames one, this fails (never skips): ``send_now``
would quietly fall back to queueing every frame, costing a reactor turn per payment."""

from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from twisted_paychan import twisted_private


class Made(protocol.Protocol):
    def __init__(self) -> None:
        self.made: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self.transport)


@pytest_twisted.ensureDeferred
async def test_tcp_transports_have_the_private_attributes_we_use():
    server_side = Made()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(lambda: server_side))
    try:
        client_side = Made()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(lambda: client_side))
        transports = [await client_side.made, await server_side.made]
        for transport in transports:
            assert type(transport) in twisted_private.TCP_TRANSPORTS, type(transport)
            assert twisted_private.missing_attributes(transport) == [], (
                f"Twisted's {type(transport).__name__} no longer has these attributes; "
                "update twisted_paychan/twisted_private.py")
            assert isinstance(transport._tempDataBuffer, list)
            assert isinstance(transport.dataBuffer, bytes)
            assert twisted_private.queued_bytes(transport) == 0
            assert twisted_private.write_unqueued(transport, b"x") == 1  # went to the socket
            transport.loseConnection()
    finally:
        await port.stopListening()


def test_request_not_sent_is_what_the_http_client_raises():
    from twisted.web import client

    assert client.RequestNotSent is twisted_private.RequestNotSent


def test_the_http_pool_and_endpoint_services_have_what_we_use():
    from twisted.application.internet import StreamServerEndpointService
    from twisted.web.client import HTTPConnectionPool

    assert HTTPConnectionPool._factory is twisted_private.HTTP11ClientFactory
    service = StreamServerEndpointService(None, None)
    for name in twisted_private.ENDPOINT_SERVICE_ATTRIBUTES:
        assert hasattr(service, name), name


def test_twisteds_do_poll_is_the_one_lighten_reactor_copies():
    """``lighten_reactor`` replaces ``EPollReactor.doPoll`` with a copy minus the logging
    context: any change to Twisted's method fails here, so that the copy is looked at again."""
    import hashlib
    import inspect

    from twisted.internet.epollreactor import EPollReactor

    source = inspect.getsource(EPollReactor.doPoll)
    assert hashlib.sha256(source.encode()).hexdigest() == twisted_private.DO_POLL_SOURCE_SHA256, (
        "Twisted's EPollReactor.doPoll changed; compare it with twisted_private._light_do_poll "
        "and update DO_POLL_SOURCE_SHA256")
    fresh = EPollReactor()
    try:
        missing = [n for n in twisted_private.REACTOR_PRIVATE_ATTRIBUTES if not hasattr(fresh, n)]
        assert missing == [], f"EPollReactor no longer has {missing}; update twisted_private.py"
    finally:
        fresh._poller.close()


def test_a_lightened_reactor_polls_without_a_logging_context(monkeypatch):
    """The reactor's main loop calls ``doIteration`` (bound to ``doPoll`` by the class): the
    lightened one must not go through ``log.callWithLogger`` on either name."""
    import socket
    import time

    from twisted.internet.epollreactor import EPollReactor
    from twisted.python import log

    contexts = []
    real = log.callWithLogger
    monkeypatch.setattr(log, "callWithLogger", lambda *a, **kw: (contexts.append(a[0]), real(*a, **kw))[1])
    fresh = EPollReactor()
    assert twisted_private.lighten_reactor(fresh)
    received = []

    class Sink(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.append(data)

    port = fresh.listenTCP(0, protocol.Factory.forProtocol(Sink), interface="127.0.0.1")
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        peer.sendall(b"paid")
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            fresh.iterate(0.05)  # runUntilCurrent, then doIteration: as mainLoop does
        assert received == [b"paid"]
        assert contexts == []
    finally:
        peer.close()
        port.stopListening()
        for _ in range(3):
            fresh.iterate(0)
        fresh._poller.close()


def test_a_lightened_reactor_carries_a_connection():
    """Bytes in and out of a TCP connection on a reactor whose poll loop was lightened (a fresh
    reactor, iterated by hand; polled with a deadline)."""
    import socket
    import time

    from twisted.internet.epollreactor import EPollReactor

    fresh = EPollReactor()
    assert twisted_private.lighten_reactor(fresh)
    received = []

    class Echo(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.append(data)
            self.transport.write(data.upper())

    port = fresh.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    peer = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        peer.sendall(b"paid")
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            fresh.iterate(0.05)
        assert received == [b"paid"]
        peer.settimeout(0.05)
        answer = b""
        while answer != b"PAID" and time.monotonic() < deadline:
            fresh.iterate(0.05)
            try:
                answer += peer.recv(10)
            except socket.timeout:
                pass
        assert answer == b"PAID"
    finally:
        peer.close()
        port.stopListening()
        for _ in range(3):
            fresh.iterate(0)
        fresh._poller.close()


def test_listen_parameters_read_twisteds_server_endpoints(tmp_path):
    """``net.reuseport`` reads where a parsed ``--listen`` listens from Twisted's endpoints."""
    from twisted.internet.endpoints import serverFromString

    p = twisted_private.listen_parameters(serverFromString(reactor, "tcp:4242:interface=127.0.0.1:backlog=7"))
    assert p == twisted_private.ListenParameters(4242, "127.0.0.1", 7, None)
    p = twisted_private.listen_parameters(serverFromString(reactor, "tcp6:4243:interface=\\:\\:1"))
    assert (p.port, p.interface, p.tls) == (4243, "::1", None)
    import twisted.test

    pem = Path(twisted.test.__file__).parent / "server.pem"  # Twisted's own test key and certificate
    p = twisted_private.listen_parameters(serverFromString(reactor, f"ssl:4244:privateKey={pem}"))
    assert (p.port, p.interface) == (4244, "") and p.tls is not None and hasattr(p.tls, "getContext")
    assert twisted_private.listen_parameters(serverFromString(reactor, f"unix:{tmp_path / 's'}")) is None
