"""
Where the signer listens and how a server reaches it: two kinds of endpoint, both authenticated.

``unix:PATH`` (the default kind): a Unix socket, created owner-only (mode 0600) in a directory
that is owner-only (0700; created so if missing). The kernel's file permissions are the
authentication: only the signer's user (and root) can connect. The server side refuses a socket
that others could reach (the socket or its directory open to group or others, or owned by
another user), in one line, before connecting.

``tls:...``: TLS over TCP for a signer on another host, with certificates both ways. The signer
listens on ``tls:PORT:certificate=SIGNER_PEM:clientCA=CA_PEM[:interface=ADDR]`` (SIGNER_PEM
holds its key and certificate) and accepts only clients whose certificate CA_PEM signed; the
server connects with ``tls:HOST:PORT:certificate=CLIENT_PEM:trustRoots=CA_PEM`` and accepts only
a signer whose certificate CA_PEM signed, for the name HOST.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import (
    HostnameEndpoint,
    SSL4ServerEndpoint,
    UNIXClientEndpoint,
    UNIXServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS


class EndpointError(ValueError):
    """An endpoint that is malformed, unreadable or not private enough; the message says which."""


def _fields(description: str, kind: str, positional: int, allowed: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    head, sep, rest = description.partition(":")
    if head != kind or not sep:
        raise EndpointError(f"expected {kind}:...")
    parts = rest.split(":")
    plain = [p for p in parts if "=" not in p]
    named = dict(p.split("=", 1) for p in parts if "=" in p)
    for name in named:
        if name not in allowed:
            raise EndpointError(f"unknown option {name!r} (known: {', '.join(allowed)})")
    if len(plain) != positional:
        raise EndpointError(f"{description!r}: expected {positional} plain field(s) after {kind}:")
    return plain, named


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise EndpointError(f"cannot read the {what} {path}: {e.strerror or e}") from None


def _certificates(own_path: str, ca_path: str) -> tuple[PrivateCertificate, Certificate]:
    """This side's key and certificate (one PEM file) and the CA certificate the other side's
    must be signed by."""
    own_pem = _read(own_path, "certificate")
    ca_pem = _read(ca_path, "CA certificate")
    try:
        return PrivateCertificate.loadPEM(own_pem.decode()), Certificate.loadPEM(ca_pem)
    except Exception as e:  # OpenSSL's errors for what is not PEM
        raise EndpointError(f"not a PEM key and certificate: {e}") from None


def _unix_path(description: str) -> str:
    rest = description[len("unix:"):]
    if rest.startswith("address="):
        rest = rest[len("address="):]
    if not rest or ":" in rest:
        raise EndpointError("expected unix:PATH")
    return os.path.abspath(rest)


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """Where ``paychan signer --listen`` listens."""
    if description.startswith("unix:"):
        path = _unix_path(description)
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        problem = _reachable_by_others(directory, os.stat(directory))
        if problem:
            raise EndpointError(f"the directory {directory} of the socket {problem}: make it owner-only (chmod 700)")
        # wantPID: a lock file beside the socket, so a restart replaces a dead signer's socket.
        return UNIXServerEndpoint(reactor, path, mode=0o600, wantPID=True)
    if description.startswith("tls:"):
        (port,), named = _fields(description, "tls", 1, ("certificate", "clientCA", "interface"))
        if "certificate" not in named or "clientCA" not in named:
            raise EndpointError("a tls: signer needs certificate=PEM (its key and certificate) and clientCA=PEM")
        own, ca = _certificates(named["certificate"], named["clientCA"])
        # options(ca): the client must present a certificate that ca signed.
        return SSL4ServerEndpoint(reactor, int(port), own.options(ca), interface=named.get("interface", ""))
    raise EndpointError("the signer listens on unix:PATH or tls:PORT:certificate=PEM:clientCA=PEM")


def client_endpoint(reactor: Any, description: str) -> IStreamClientEndpoint:
    """How the server's ``signer:`` backend reaches the signer; a Unix socket is checked first."""
    if description.startswith("unix:"):
        path = _unix_path(description)
        check_socket(path)
        return UNIXClientEndpoint(reactor, path, timeout=10)
    if description.startswith("tls:"):
        (host, port), named = _fields(description, "tls", 2, ("certificate", "trustRoots"))
        if "certificate" not in named or "trustRoots" not in named:
            raise EndpointError("a tls: signer needs certificate=PEM (the server's key and certificate) and "
                                "trustRoots=PEM (the CA that signed the signer's)")
        own, ca = _certificates(named["certificate"], named["trustRoots"])
        options = optionsForClientTLS(host, trustRoot=ca, clientCertificate=own)
        return wrapClientTLS(options, HostnameEndpoint(reactor, host, int(port), timeout=10))
    raise EndpointError("expected unix:PATH or tls:HOST:PORT:certificate=PEM:trustRoots=PEM")


def _reachable_by_others(path: str, st: os.stat_result) -> str:
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by this user"
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"is open to others (mode {stat.S_IMODE(st.st_mode):03o})"
    return ""


def check_socket(path: str) -> None:
    """Refuse a signer socket that another user could reach, or that is no socket; a socket not
    there yet passes (the signer is not running: the connection fails and is retried)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise EndpointError(f"cannot look at the signer socket {path}: {e.strerror or e}") from None
    directory = os.path.dirname(path)
    try:
        dst = os.stat(directory)
    except OSError as e:
        raise EndpointError(f"cannot look at the directory of the signer socket {path}: {e.strerror or e}") from None
    problem = _reachable_by_others(directory, dst)
    if problem:
        raise EndpointError(f"refusing the signer socket {path}: its directory {directory} {problem}")
    if st is None:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointError(f"refusing the signer socket {path}: it is not a socket")
    problem = _reachable_by_others(path, st)
    if problem:
        raise EndpointError(f"refusing the signer socket {path}: it {problem}")
