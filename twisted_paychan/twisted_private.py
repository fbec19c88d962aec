"""
Everything we take from Twisted that is not its public API, in one place.

``RequestNotSent``: ``rpc.connection`` retries a call whose request never left (a kept-alive
connection the node had closed). Twisted raises it from ``twisted.web._newclient`` and
re-exports it from ``twisted.web.client`` without listing it in ``__all__``.

``HTTP11ClientFactory``: the factory ``HTTPConnectionPool`` makes each connection with, which
``rpc.connection`` subclasses to silence its per-connection log lines (``pool._factory``).

``StreamServerEndpointService``'s ``_raiseSynchronously`` and ``_waitingForPort``: ``startup``
makes a server's busy port fail its start at once (twistd's own ``strports`` services log it and
run on without the port).

Direct socket writes:

``net.tcp.send_now`` hands a frame straight to the socket when nothing is queued before it,
instead of waiting a turn of the reactor (see ``net.tcp``). To know that nothing is queued, and
to write without queueing, it reads the write buffers of Twisted's TCP connections
(``abstract.FileDescriptor``): the undocumented ``dataBuffer`` and ``writeSomeData`` and the
private ``_tempDataBuffer``. Those can change in any Twisted release without a deprecation, so
they are named here and nowhere else, and ``tests/test_twisted_private.py`` fails (it never
skips) the day an installed Twisted lacks one of them. Should that happen at run time anyway,
:func:`write_unqueued` writes nothing and the caller queues with ``transport.write``, as
Twisted would: slower, never wrong.

Listening parameters (``listen_parameters``): ``net.reuseport`` makes its own listening socket
(``SO_REUSEPORT``) for a ``--listen`` that Twisted parsed, so it reads the port, interface and
backlog of Twisted's TCP server endpoints (``_port``, ``_interface``, ``_backlog``) and the TLS
context factory of ``ssl:`` ones (``_sslContextFactory``): parsing endpoint strings again would
be a second, different parser of Twisted's syntax. The test fails when one of them goes.

The reactor's poll loop (``lighten_reactor``): ``EPollReactor.doPoll`` hands each ready socket
to ``_doReadOrWrite`` through ``log.callWithLogger``, which asks the socket for its log prefix
and pushes a logging context (a dict and four calls) for every event, only so that a legacy
``log.msg`` inside names its connection. Our code logs through ``twisted.logger`` with its own
fields, and ``_doReadOrWrite`` already catches and logs what a socket raises, so for the server
this is cost per payment and nothing else. ``lighten_reactor`` gives one reactor instance a
``doPoll`` that is Twisted's own without that wrapper (an exception escaping it is still
logged). It reads the private ``_poller``, ``_selectables`` and ``_doReadOrWrite``, and it is
a copy of Twisted's method: the test fails when Twisted's ``doPoll`` changes in any way
(``DO_POLL_SOURCE_SHA256``), so that the copy is looked at again.
"""

from __future__ import annotations

import errno
import types
from typing import Any, Final, Optional

from dataclasses import dataclass

from twisted.internet import tcp
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import ITransport
from twisted.python import log
from twisted.web._newclient import RequestNotSent
from twisted.web.client import _HTTP11ClientFactory as HTTP11ClientFactory

#: What ``startup`` reads and sets on a ``StreamServerEndpointService``.
ENDPOINT_SERVICE_ATTRIBUTES: Final = ("_raiseSynchronously", "_waitingForPort")

__all__ = ["ENDPOINT_SERVICE_ATTRIBUTES", "HTTP11ClientFactory", "ListenParameters", "RequestNotSent", "TCP_TRANSPORTS",
           "lighten_reactor", "listen_parameters", "missing_attributes", "queued_bytes", "write_unqueued"]

#: Twisted's TCP transports (server and client side); subclasses elsewhere (TLS, test doubles)
#: are not assumed to keep the same buffers.
TCP_TRANSPORTS: Final = frozenset({tcp.Server, tcp.Client})

#: What this module reads of a TCP transport beyond ITransport.
PRIVATE_ATTRIBUTES: Final = ("TLS", "dataBuffer", "_tempDataBuffer", "writeSomeData", "connected", "disconnecting")


def write_unqueued(transport: ITransport, data: bytes) -> int:
    """Write ``data`` to the socket of a Twisted TCP transport with nothing queued; how many
    bytes the socket took (0 for any other transport, a busy one, or a failed write). The
    caller hands the rest to ``transport.write``, which keeps the order."""
    # Each attribute is read with a default that means "busy": were one renamed, we write
    # nothing here and the caller queues, instead of failing the connection.
    if (
        type(transport) in TCP_TRANSPORTS
        and not getattr(transport, "TLS", True)  # listenSSL's connections are tcp.Server too: bytes must go through TLS
        and not getattr(transport, "dataBuffer", True)
        and not getattr(transport, "_tempDataBuffer", True)
        and getattr(transport, "connected", False)
        and not getattr(transport, "disconnecting", True)
    ):
        sent = transport.writeSomeData(data)  # type: ignore[attr-defined]
        if isinstance(sent, int):
            return sent
    return 0


def queued_bytes(transport: ITransport) -> int:
    """How many bytes a Twisted TCP transport holds for later turns of the reactor."""
    queued: list[bytes] = transport._tempDataBuffer  # type: ignore[attr-defined]
    buffered: bytes = transport.dataBuffer  # type: ignore[attr-defined]
    return len(buffered) + sum(len(chunk) for chunk in queued)


def missing_attributes(transport: ITransport) -> list[str]:
    """The names of :data:`PRIVATE_ATTRIBUTES` that ``transport`` lacks (none, on the Twisted
    this was written against)."""
    return [name for name in PRIVATE_ATTRIBUTES if not hasattr(transport, name)]


#: sha256 of ``inspect.getsource(EPollReactor.doPoll)`` in the Twisted that ``_light_do_poll``
#: copies (26.10.0).
DO_POLL_SOURCE_SHA256: Final = "09b62ae68ef01b4bc5eaa170827e2baf0a2a5098e7e7ce7b5e1c80cda187c827"

#: What ``_light_do_poll`` reads of an EPollReactor.
REACTOR_PRIVATE_ATTRIBUTES: Final = ("_poller", "_selectables", "_doReadOrWrite")


def lighten_reactor(reactor: Any) -> bool:
    """Give ``reactor`` (an EPollReactor) the poll loop without a logging context per event;
    whether it was done (any other reactor, or one lacking what the loop reads, is left as is)."""
    if not isinstance(reactor, EPollReactor) or not all(hasattr(reactor, n) for n in REACTOR_PRIVATE_ATTRIBUTES):
        return False
    light = types.MethodType(_light_do_poll, reactor)
    # ``mainLoop`` calls ``doIteration``, which the class binds to ``doPoll`` once
    # (``doIteration = doPoll``): both names must be replaced.
    reactor.doPoll = reactor.doIteration = light  # type: ignore[method-assign]
    return True


def _light_do_poll(self: Any, timeout: Optional[float]) -> None:
    """``EPollReactor.doPoll``, calling ``_doReadOrWrite`` directly (see the module docstring)."""
    if timeout is None:
        timeout = -1
    try:
        events = self._poller.poll(timeout, len(self._selectables))
    except OSError as e:
        if e.errno == errno.EINTR:
            return
        raise
    selectables = self._selectables
    do_read_or_write = self._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            do_read_or_write(selectable, fd, event)
        except Exception:  # as log.callWithLogger: logged, and the loop goes on
            log.err(None, "unhandled error in the reactor's poll loop")


#: What ``listen_parameters`` reads of Twisted's TCP (and SSL) server endpoints.
SERVER_ENDPOINT_ATTRIBUTES: Final = ("_port", "_interface", "_backlog")
#: What it reads of an ``ssl:`` one besides.
SSL_ENDPOINT_ATTRIBUTES: Final = ("_sslContextFactory",)


@dataclass(frozen=True)
class ListenParameters:
    """Where a TCP server endpoint listens; ``tls`` is the context factory of an ``ssl:`` one."""

    port: int
    interface: str
    backlog: int
    tls: Optional[Any]


def listen_parameters(endpoint: Any) -> Optional[ListenParameters]:
    """The parameters of a ``tcp:``, ``tcp6:`` or ``ssl:`` server endpoint that
    ``serverFromString`` made; None for any other kind (``unix:``, plugins)."""
    if isinstance(endpoint, SSL4ServerEndpoint):
        return ListenParameters(endpoint._port, endpoint._interface, endpoint._backlog, endpoint._sslContextFactory)
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
        return ListenParameters(endpoint._port, endpoint._interface, endpoint._backlog, None)
    return None
