"""
A regtest node serving JSON-RPC, as one Twisted service: what ``paychan regtest`` runs, and
what a twistd plugin would return from ``makeService``.

Starting opens the node on its data directory (taking the directory's lock), optionally starts
mining every N seconds, and listens; stopping closes the port, removes the cookie and closes
the node (flushing the kernel's databases and releasing the lock), in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_paychan.chain.embedded.node import RegtestNode
from twisted_paychan.chain.embedded.rpc.server import DEFAULT_ENDPOINT, RpcServer, serve_node

log = Logger()


class NodeRpcService(Service):
    def __init__(
        self,
        reactor: Any,
        datadir: Union[str, Path],
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        user: Optional[str] = None,
        password: Optional[str] = None,
        cookie_dir: Union[str, Path, None] = None,
        mine_every: Optional[float] = None,
        fee_rate: Optional[int] = None,
        on_stop: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.reactor = reactor
        self.datadir = Path(datadir)
        self.endpoint = endpoint
        self.user = user
        self.password = password
        self.cookie_dir = cookie_dir
        self.mine_every = mine_every
        self.fee_rate = fee_rate
        self.on_stop = on_stop
        self.node: Optional[RegtestNode] = None
        self.server: Optional[RpcServer] = None
        #: Fires with the RpcServer once listening (or with the failure to start).
        self.ready: Deferred[RpcServer] = Deferred()

    def startService(self) -> None:
        Service.startService(self)
        self.ready = Deferred.fromCoroutine(self._start())

    async def _start(self) -> RpcServer:
        self.node = RegtestNode(self.datadir, self.reactor)
        try:
            self.server = await serve_node(
                self.reactor,
                self.node,
                self.endpoint,
                user=self.user,
                password=self.password,
                cookie_dir=self.cookie_dir,
                fee_rate=self.fee_rate,
                on_stop=self.on_stop,
            )
        except BaseException:
            self.node.close()
            self.node = None
            raise
        if self.mine_every is not None:
            self.node.start_mining(self.mine_every)
        return self.server

    def stopService(self) -> "Deferred[None]":
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        try:
            await self.ready
        except Exception:
            pass  # it never started; nothing to undo
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        node, self.node = self.node, None
        if node is not None:
            node.close()
            log.info("regtest node on {datadir} closed", datadir=str(self.datadir))
