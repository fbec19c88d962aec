"""
The ``paychan`` commands' way into a running ``twistd paychan``: its HTTP API.

A server with its API on leaves ``DATA_DIR/api.json`` (its URL and where its token is: see
``api.auth``). :func:`running_server` reads it; :meth:`ApiClient.call` asks the server. A file
left by a server that crashed points at a port nobody listens on: the call then raises
:class:`NotRunning`, and the command works on the files instead, as it does when no file is
there. Everything runs on the command's own reactor (``cli.runner``).
"""

from __future__ import annotations

import json
from io import BytesIO
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import error as neterror
import treq
from treq.client import HTTPClient
from twisted.internet.task import Cooperator
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers

from twisted_paychan.api import auth
from twisted_paychan.cli.output import UserError

#: Seconds to wait for the server's answer (a settle-all may broadcast many settlements).
TIMEOUT = 120.0


class NotRunning(Exception):
    """Nobody answers at the URL the data directory names: work offline."""


@dataclass(frozen=True)
class RunningServer:
    url: str
    token: str
    certificate: Optional[str] = None


def running_server(data_dir: Optional[str]) -> Optional[RunningServer]:
    """The server that says it runs on ``data_dir`` (None: none does, work on the files)."""
    if data_dir is None:
        return None
    advertised = auth.read_advertised(data_dir)
    if advertised is None:
        return None
    try:
        token = auth.read_token(advertised.token_file)
    except (OSError, ValueError) as e:
        raise UserError(f"a server runs on {data_dir} ({advertised.url}) but its API token in "
                        f"{advertised.token_file} cannot be read: {e}") from None
    return RunningServer(advertised.url, token.value, advertised.certificate)


def _tls_policy(certificate: Optional[str]) -> Optional[BrowserLikePolicyForHTTPS]:
    if certificate is None:
        return None
    from twisted.internet import ssl

    try:
        with open(certificate, "rb") as f:
            root = ssl.Certificate.loadPEM(f.read())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the API's certificate {certificate}: {e}") from None
    return BrowserLikePolicyForHTTPS(trustRoot=root)


class ApiClient:
    def __init__(self, reactor: Any, server: RunningServer) -> None:
        self.reactor = reactor
        self.server = server
        pool = HTTPConnectionPool(reactor, persistent=False)
        policy = _tls_policy(server.certificate)
        agent = Agent(reactor, policy, pool=pool) if policy is not None else Agent(reactor, pool=pool)
        # A body's producer must run on this command's own reactor (cli.runner), not on the
        # global one that treq's default cooperator schedules on and nobody runs here.
        cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))
        self.http = HTTPClient(agent, data_to_body_producer=lambda data: FileBodyProducer(BytesIO(data), cooperator))

    async def call(self, method: str, path: str, body: Optional[dict[str, Any]] = None) -> tuple[int, Any]:
        """(HTTP status, the JSON answer); :class:`NotRunning` if nobody listens. ``body`` goes
        as a JSON object."""
        headers = Headers({b"authorization": [f"Bearer {self.server.token}".encode()]})
        data: Optional[bytes] = None
        if body is not None:
            headers.addRawHeader(b"content-type", b"application/json")
            data = json.dumps(body).encode()
        try:
            d = self.http.request(method, self.server.url + path, headers=headers, data=data)
            d.addTimeout(TIMEOUT, self.reactor)
            response = await d
            content = await treq.content(response)
        except (neterror.ConnectionRefusedError, neterror.ConnectError) as e:
            raise NotRunning(str(e)) from None
        except ResponseFailed as e:
            raise UserError(f"the server at {self.server.url} broke off its answer: {e}") from None
        except neterror.TimeoutError:
            raise UserError(f"the server at {self.server.url} did not answer within {TIMEOUT:g} s") from None
        try:
            answer = json.loads(content) if content else {}
        except ValueError:
            raise UserError(f"the server at {self.server.url} answered {response.code} with no JSON") from None
        if response.code == 401:
            raise UserError(f"the server at {self.server.url} refused the API token (401): is it this data "
                            "directory's server?")
        return int(response.code), answer


async def ask(reactor: Any, data_dir: Optional[str], method: str, path: str,
              body: Optional[dict[str, Any]] = None) -> Optional[tuple[int, Any]]:
    """The running server's answer, or None when none runs for ``data_dir``."""
    server = running_server(data_dir)
    if server is None:
        return None
    try:
        return await ApiClient(reactor, server).call(method, path, body)
    except NotRunning:
        return None


def checked(answer: tuple[int, Any]) -> Any:
    """The JSON of a 200 answer; any other status as the user's error, in the server's words."""
    status, body = answer
    if status != 200:
        message = body.get("error") if isinstance(body, dict) else None
        raise UserError(f"the server answered {status}: {message or 'no reason given'}")
    return body
