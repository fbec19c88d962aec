"""A server and a client on loopback TCP, on the embedded regtest chain, with SQLite wallets
and stores on both sides: the real thing, in one process."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from twisted_paychan.chain.embedded.chain import EmbeddedChain
from twisted_paychan.channel.settings import ClientSettings, ServerSettings
from twisted_paychan.net.client import connect
from twisted_paychan.net.server import PaymentChannelServerFactory
from twisted_paychan.store.sqlite import SqliteChannelStore
from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.wallet.sqlite import SqliteWallet

SERVER_ID = hashlib.sha256(b"tcp-test-server").digest()


class Loopback:
    def __init__(self, tmp: Path, server_settings: ServerSettings | None = None) -> None:
        self.tmp = tmp
        self.chain = EmbeddedChain.open(tmp / "chain", reactor)
        self.server_wallet = SqliteWallet.open(tmp / "server-wallet.sqlite", self.chain)
        self.client_wallet = SqliteWallet.open(tmp / "client-wallet.sqlite", self.chain)
        self.server_store = SqliteChannelStore(str(tmp / "server-channels.sqlite"), reactor)
        self.client_store = SqliteChannelStore(str(tmp / "client-channels.sqlite"), reactor)
        self.server_settings = server_settings or ServerSettings(fee_rate=1000)
        self.factory = PaymentChannelServerFactory(
            self.server_wallet, self.chain, self.server_store, self.server_settings, reactor
        )
        self.port: Any = None
        self.client_key: Any = None

    async def start(self, funds_blocks: int = 1) -> None:
        address = await self.client_wallet.new_address()
        self.chain.mine(funds_blocks, address_to_script(address, REGTEST))
        self.chain.mine(100)  # coinbase maturity
        self.client_key = await self.client_wallet.new_channel_key()
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)

    def connect(self, settings: ClientSettings, **kw: Any) -> defer.Deferred:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        return connect(reactor, endpoint, self.client_wallet, self.chain, self.client_store, settings,
                       SERVER_ID, self.client_key, **kw)

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
        await self.server_store.close()
        await self.client_store.close()
        self.server_wallet.close()
        self.client_wallet.close()
        self.chain.close()
