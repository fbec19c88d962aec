"""
A regtest node served over JSON-RPC on 127.0.0.1:0, and an RpcChain talking to it, for the
rpc tests. The node runs in this process (its blocks take their time from a ``task.Clock``);
the HTTP runs on the real reactor over loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.task import Clock

from chain_backends import Backend, embedded_backend
from twisted_paychan.chain.embedded.rpc.server import RpcServer, serve_node
from twisted_paychan.chain.rpc.chain import RpcChain
from twisted_paychan.rpc.connection import RpcConnection

LOOPBACK = "tcp:0:interface=127.0.0.1"


@dataclass
class Harness:
    inner: Backend  # the embedded node, with its test powers
    server: RpcServer
    connection: RpcConnection
    chain: RpcChain
    poll_clock: Clock
    backend: Backend  # the conformance view: RpcChain plus the node's powers

    @property
    def node(self) -> Any:
        return self.inner.chain.node  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.chain.stop()
        await self.connection.close()
        await self.server.stop()
        self.inner.close()


async def start_harness(tmp_path: Path, fee_rate: Optional[int] = None, **chain_options: Any) -> Harness:
    inner = embedded_backend(tmp_path)
    node = inner.chain.node  # type: ignore[attr-defined]
    server = await serve_node(reactor, node, LOOPBACK, cookie_dir=tmp_path, fee_rate=fee_rate)
    poll_clock = Clock()
    chain = RpcChain.from_url(reactor, server.url, cookie_path=tmp_path / ".cookie", clock=poll_clock, **chain_options)
    await chain.start()
    connection = RpcConnection(reactor, server.url, cookie_path=tmp_path / ".cookie")
    backend = Backend("rpc", chain, inner.mine, inner.fund, inner.advance, chain.poll, extra=inner.extra, reorg=inner.reorg)
    return Harness(inner, server, connection, chain, poll_clock, backend)


async def serve_methods(methods: Any, password: str = "pw") -> tuple[Any, str]:
    """A server on 127.0.0.1:0 for a hand-made method table (an older or index-less Core);
    (listening port, URL with credentials)."""
    from twisted.web.server import Site

    from twisted_paychan.rpc.auth import Credentials
    from twisted_paychan.chain.embedded.rpc.server import RpcResource

    site = Site(RpcResource(methods, Credentials("test", password), reactor.callLater))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    return port, f"http://test:{password}@127.0.0.1:{port.getHost().port}"
