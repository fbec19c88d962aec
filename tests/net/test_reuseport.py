"""``--reuse-port`` (``net.reuseport``) in one process: two listeners on one port, each with its
own factory, both get connections; TLS (``ssl:``) works the same; a port held without the option
refuses the listen; a Unix socket is refused in one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import Certificate, optionsForClientTLS

from twisted_paychan.net.reuseport import ReusePortUnsupported, reuse_port_endpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Name(protocol.Protocol):
    """Says which listener took the connection, then closes."""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.name)
        self.transport.loseConnection()


class Heard(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.data)


def _factory(name: bytes) -> protocol.Factory:
    factory = protocol.Factory.forProtocol(Name)
    factory.name = name  # type: ignore[attr-defined]
    return factory


async def _who_answers(endpoint, times: int) -> set[bytes]:
    names = set()
    for _ in range(times):
        heard = Heard()
        await endpoint.connect(protocol.Factory.forProtocol(lambda: heard))
        names.add(await heard.done)
    return names


@pytest_twisted.ensureDeferred
async def test_two_listeners_share_one_port_and_both_take_connections():
    port = _free_port()
    description = f"tcp:{port}:interface=127.0.0.1"
    a = await reuse_port_endpoint(reactor, description).listen(_factory(b"a"))
    b = await reuse_port_endpoint(reactor, description).listen(_factory(b"b"))
    try:
        assert a.getHost().port == b.getHost().port == port
        names = await _who_answers(TCP4ClientEndpoint(reactor, "127.0.0.1", port), 32)
        assert names == {b"a", b"b"}  # the kernel spreads connections by a hash of the addresses
        await a.stopListening()
        assert await _who_answers(TCP4ClientEndpoint(reactor, "127.0.0.1", port), 4) == {b"b"}
    finally:
        await defer.maybeDeferred(a.stopListening)
        await defer.maybeDeferred(b.stopListening)


@pytest_twisted.ensureDeferred
async def test_a_port_held_without_the_option_refuses_the_listen():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(CannotListenError):
            await reuse_port_endpoint(reactor, f"tcp:{port}:interface=127.0.0.1").listen(_factory(b"x"))


def test_a_unix_socket_is_refused_in_one_line(tmp_path):
    with pytest.raises(ReusePortUnsupported, match="works with tcp:, tcp6: and ssl: --listen endpoints, not unix:"):
        reuse_port_endpoint(reactor, f"unix:{tmp_path / 's'}")


@pytest_twisted.ensureDeferred
async def test_tls_listeners_share_one_port():
    import twisted.test

    cert = Path(twisted.test.__file__).parent / "server.pem"  # Twisted's own, for "localhost", self-signed
    port = _free_port()
    description = f"ssl:{port}:interface=127.0.0.1:privateKey={cert}"
    a = await reuse_port_endpoint(reactor, description).listen(_factory(b"a"))
    b = await reuse_port_endpoint(reactor, description).listen(_factory(b"b"))
    try:
        options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(cert.read_bytes()))
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        assert await _who_answers(endpoint, 32) == {b"a", b"b"}  # verified TLS, on both listeners
    finally:
        await defer.maybeDeferred(a.stopListening)
        await defer.maybeDeferred(b.stopListening)
