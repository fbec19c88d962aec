"""A real server (the embedded chain, SQLite wallets and stores, loopback TCP: ``tcp_setup``)
with the API listening on 127.0.0.1:0, and a small treq client for it."""

from __future__ import annotations

import json
from typing import Any, Optional

import treq
from twisted.internet import reactor

from tcp_setup import Loopback
from twisted_paychan.api.auth import Token
from twisted_paychan.api.service import Api

TOKEN = "test-token-123"


class ApiLoopback(Loopback):
    extra: Optional[dict] = None

    async def start(self, funds_blocks: int = 1) -> None:
        await super().start(funds_blocks)
        self.api = Api(reactor, self.factory.manager, self.server_wallet, self.chain, self.server_store, Token(TOKEN),
                       listen=["tcp:0"], extra=self.extra)
        self.api_port = await self.api.listen("tcp:0:interface=127.0.0.1")
        self.url = self.api.context.api_url

    async def stop(self) -> None:
        self.api.close()
        await self.api_port.stopListening()
        await super().stop()

    async def call(self, method: str, path: str, token: Optional[str] = TOKEN, headers: Optional[dict[str, str]] = None,
                   **kw: Any) -> tuple[int, Any]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        response = await treq.request(method, self.url + path, headers=h, persistent=False, **kw)
        body = await response.content()
        ctype = response.headers.getRawHeaders("content-type", [""])[0]
        return response.code, (json.loads(body) if ctype.startswith("application/json") else body.decode())
