"""
``paychan pay --server tls:HOST:PORT[:trustRoots=DIR][:timeout=SECONDS]``: the client's TLS
endpoint.

Twisted's own ``tls:`` client endpoint works on the process-global reactor only: its TLS
transport flushes what the protocol writes on a timer of the global reactor, and ``paychan``
runs each command on a reactor of its own (``cli.runner``), so nothing would ever be sent. This
endpoint is the same thing (``HostnameEndpoint`` wrapped in TLS, the server's certificate
verified against the CA certificates in ``trustRoots`` (a PEM file or a directory of them), or
the platform's roots without it, and its name checked against HOST) on the command's reactor.

It also keeps the TLS error that ended a connection, so that ``paychan pay`` can say the
certificate was refused rather than that the server hung up: the channel client only sees a
connection that closed before any answer. Nothing is sent to a server that was not verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["TlsClientEndpoint", "parse_tls"]


def parse_tls(reactor: Any, description: str) -> "TlsClientEndpoint":
    """The endpoint for ``tls:HOST:PORT[:trustRoots=PATH][:timeout=SECONDS]``; ValueError if
    it is not one."""
    kind, *fields = description.split(":")
    if kind != "tls" or len(fields) < 2:
        raise ValueError("expected tls:HOST:PORT[:trustRoots=PATH][:timeout=SECONDS]")
    host, port_text, *options = fields
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port {port_text!r}") from None
    named: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name not in ("trustRoots", "timeout"):
            raise ValueError(f"unknown option {option!r} (trustRoots=PATH, timeout=SECONDS)")
        named[name] = value
    trust = _trust_root(Path(named["trustRoots"])) if "trustRoots" in named else None
    return TlsClientEndpoint(reactor, host, port, trust, float(named.get("timeout", "30")))


def _trust_root(path: Path) -> Any:
    files = sorted(p for p in path.iterdir() if p.suffix in (".pem", ".crt")) if path.is_dir() else [path]
    try:
        certificates = [Certificate.loadPEM(p.read_bytes()) for p in files]
    except OSError as e:
        raise ValueError(f"cannot read trustRoots {path}: {e.strerror or e}") from None
    except Exception as e:  # OpenSSL's errors for a file that is not PEM
        raise ValueError(f"trustRoots {path} holds something that is not a PEM certificate: {e}") from None
    if not certificates:
        raise ValueError(f"trustRoots {path} holds no certificate (*.pem, *.crt)")
    return trustRootFromCertificates(certificates)


@implementer(IProtocolFactory)
class _RecordingFactory:
    """The channel protocol's factory, noting how each of its connections ended."""

    def __init__(self, wrapped: IProtocolFactory, endpoint: "TlsClientEndpoint") -> None:
        self._wrapped = wrapped
        self._endpoint = endpoint

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()

    def logPrefix(self) -> str:
        return type(self._wrapped).__name__

    def buildProtocol(self, addr: IAddress) -> Optional[IProtocol]:
        protocol = self._wrapped.buildProtocol(addr)
        if protocol is not None:
            lost = protocol.connectionLost
            endpoint = self._endpoint

            def connection_lost(reason: Failure) -> None:
                endpoint.record(reason)
                lost(reason)

            setattr(protocol, "connectionLost", connection_lost)  # the TLS layer calls it through the instance
        return protocol


@implementer(IStreamClientEndpoint)
class TlsClientEndpoint:
    """TLS to ``host``:``port`` on ``reactor``, verifying the server against ``trust_root``
    (None: the platform's roots); ``tls_error`` says why the last connection's TLS failed."""

    def __init__(self, reactor: Any, host: str, port: int, trust_root: Any, timeout: float) -> None:
        self._reactor = reactor
        self._tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
        self._options = optionsForClientTLS(host, trustRoot=trust_root)
        self.tls_error: Optional[str] = None

    def connect(self, protocolFactory: IProtocolFactory) -> "defer.Deferred[IProtocol]":
        tls = TLSMemoryBIOFactory(self._options, True, _RecordingFactory(protocolFactory, self), clock=self._reactor)
        d = self._tcp.connect(tls)

        def inner(protocol: IProtocol) -> IProtocol:
            wrapped: IProtocol = getattr(protocol, "wrappedProtocol")  # the channel protocol inside TLS
            return wrapped

        return d.addCallback(inner)

    def record(self, reason: Failure) -> None:
        from OpenSSL.SSL import Error as TlsError

        if isinstance(reason.value, TlsError):
            self.tls_error = _describe(reason.value)
        elif type(reason.value).__name__ == "VerificationError":  # service_identity: the name does not match
            self.tls_error = str(reason.value)


def _describe(error: Exception) -> str:
    """OpenSSL's reasons (``certificate verify failed``), without the library's tuple noise."""
    parts = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [part[2] for part in parts if isinstance(part, tuple) and len(part) == 3 and part[2]]
    return "; ".join(reasons) if reasons else str(error)
