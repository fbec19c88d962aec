"""
``twistd paychan --reuse-port``: several server processes on one machine share one port.

With ``SO_REUSEPORT`` set on every listening socket of a port, Linux lets each process bind it
and spreads new connections over them (by a hash of the addresses); a process that dies stops
getting new ones, and its clients reconnect to the others (``doc/cluster.md``). Twisted's TCP
endpoints have no such option, so :class:`ReusePortEndpoint` makes the listening socket itself
(``SO_REUSEADDR`` and ``SO_REUSEPORT``, bound, listening, non-blocking) and hands it to the
reactor with ``adoptStreamPort`` (``IReactorSocket``, public API). The ``--listen`` string is
parsed by Twisted as usual (``tcp:``, ``tcp6:`` or ``ssl:``); what it says is read back through
``twisted_private.listen_parameters``. For ``ssl:`` the adopted port carries the endpoint's own
TLS context (``TLSMemoryBIOFactory``), so TLS works as without the option. Other kinds
(``unix:``, plugins) are refused with one line: a Unix socket has no port to share.

Every process on the port must set the option (Linux refuses a second bind otherwise, and then
the start stops with the usual "cannot listen" line), and run as the same user.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from twisted_paychan.twisted_private import ListenParameters, listen_parameters

#: The endpoint kinds ``--reuse-port`` works with.
KINDS = ("tcp", "tcp6", "ssl")


class ReusePortUnsupported(ValueError):
    """The ``--listen`` endpoint is not one whose port can be shared; the message says so."""


def check_reuse_port(description: str) -> None:
    """:class:`ReusePortUnsupported` for a ``--listen`` kind other than ``tcp:``, ``tcp6:`` or
    ``ssl:``, or a system without the option (``twistd paychan`` checks its options with it)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ReusePortUnsupported("--reuse-port needs SO_REUSEPORT, which this system does not have")
    kind = description.split(":", 1)[0].lower()
    if kind not in KINDS:
        raise ReusePortUnsupported(f"--reuse-port works with tcp:, tcp6: and ssl: --listen endpoints, not {kind}:")


def reuse_port_endpoint(reactor: Any, description: str) -> "ReusePortEndpoint":
    """The endpoint for ``--listen DESCRIPTION --reuse-port`` (see :func:`check_reuse_port`)."""
    check_reuse_port(description)
    parameters = listen_parameters(serverFromString(reactor, description))
    if parameters is None:
        raise ReusePortUnsupported(f"--reuse-port cannot share the port of --listen {description}")
    return ReusePortEndpoint(reactor, parameters)


def _family(interface: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in interface else socket.AF_INET


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP (or TLS over TCP) server endpoint whose socket has ``SO_REUSEPORT`` set."""

    def __init__(self, reactor: Any, parameters: ListenParameters) -> None:
        self.reactor = reactor
        self.parameters = parameters

    def listen(self, protocolFactory: IProtocolFactory) -> "defer.Deferred[IListeningPort]":
        p = self.parameters
        family = _family(p.interface)
        interface = p.interface or ("::" if family == socket.AF_INET6 else "")
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, p.port))
            sock.listen(p.backlog)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            return defer.fail(CannotListenError(p.interface, p.port, e))
        factory: IProtocolFactory = protocolFactory
        if p.tls is not None:
            factory = TLSMemoryBIOFactory(p.tls, False, protocolFactory)
        try:
            port: IListeningPort = self.reactor.adoptStreamPort(sock.fileno(), family, factory)
        finally:
            sock.close()  # the reactor has its own copy of the descriptor
        return defer.succeed(port)
