"""An in-memory client/server pair: two channel objects joined by message queues, on a
MemoryChain, MemoryWallets and in-memory stores, driven by a task.Clock. Nothing is
delivered re-entrantly: ``pump`` moves messages until both sides are quiet."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from twisted.internet import task

from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ClientSettings, ServerSettings
from twisted_paychan.net.client_channel import ClientChannel
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.net.server_channel import NullServerHandler, ServerChannel
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.store.memory import MemoryChannelStore
from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.wallet.memory import MemoryWallet
from twisted_paychan.wire.messages import decode_message, encode_message

START = 1_700_000_000
SERVER_ID = hashlib.sha256(b"interop-server").digest()


def result_of(d: Any) -> Any:
    out: list = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    r = out[0]
    if hasattr(r, "raiseException"):
        r.raiseException()
    return r


def failure_of(d: Any) -> Any:
    out: list = []
    d.addBoth(out.append)
    assert out and hasattr(out[0], "raiseException"), f"expected a failure, got {out}"
    return out[0]


class Pair:
    def __init__(
        self,
        server_settings: Optional[ServerSettings] = None,
        funds: int = 50_000_000,
        chain_dir: Any = None,
        start: float = START,
    ) -> None:
        self.clock = task.Clock()
        self.clock.advance(start)
        self.chain = MemoryChain(self.clock) if chain_dir is None else _embedded(chain_dir, self.clock)
        self.server_wallet = MemoryWallet(self.chain)
        self.client_wallet = MemoryWallet(self.chain)
        self.server_store = MemoryChannelStore()
        self.client_store = MemoryChannelStore()
        self.server_settings = server_settings or ServerSettings(fee_rate=1000)
        self.channels = ServerChannelManager(self.server_wallet, self.chain, self.server_store, self.server_settings,
                                             self.clock)
        #: The client's channels (not started: it follows the connected channels only, as
        #: ``paychan pay`` does; a test that wants refunds calls ``start()``).
        self.client_manager = ClientChannelManager(self.client_wallet, self.chain, self.client_store, self.clock)
        address = result_of(self.client_wallet.new_address())
        if chain_dir is None:
            self.chain.credit(address_to_script(address, REGTEST), funds)
            self.chain.mine(1)
        else:  # a coinbase of 50 BTC, matured, on Bitcoin Core's consensus engine
            self.mine(1, address_to_script(address, REGTEST))
            self.mine(100)
        self.client_key = result_of(self.client_wallet.new_channel_key())
        self.handler = NullServerHandler()
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.server: Optional[ServerChannel] = None
        self.client: Optional[ClientChannel] = None
        self.server_closed: Optional[CloseReason] = None
        self.client_closed: Optional[CloseReason] = None
        self.wire: list[tuple[str, bytes]] = []

    def mine(self, count: int = 1, script: Optional[bytes] = None, spacing: int = 600) -> None:
        """Mine blocks ``spacing`` seconds apart on the pair's clock, delivering notifications."""
        for _ in range(count):
            self.clock.advance(spacing)
            if script is None:
                self.chain.mine(1)
            else:
                self.chain.mine(1, script)
            self.clock.advance(0)
            self.clock.advance(0)

    def connect(self, client_settings: ClientSettings, resume: Any = None, handler: Any = None) -> ClientChannel:
        self.to_server.clear()
        self.to_client.clear()
        self.server_closed = self.client_closed = None
        self.server = self.channels.connection(handler or self.handler, lambda msg: self._put("s2c", msg),
                                               self._server_close)
        self.client = self.client_manager.new_connection(
            client_settings, SERVER_ID, self.client_key,
            lambda msg: self._put("c2s", msg), self._client_close, resume,
        )
        self.client.start()
        self.pump()
        return self.client

    def _put(self, direction: str, msg: Any) -> None:
        raw = encode_message(msg)  # every message goes through the real codec
        self.wire.append((direction, raw))
        (self.to_server if direction == "c2s" else self.to_client).append(raw)

    def _server_close(self, reason: CloseReason) -> None:
        self.server_closed = reason

    def _client_close(self, reason: CloseReason) -> None:
        self.client_closed = reason

    def pump(self) -> None:
        """Deliver queued messages both ways; a close on one side is EOF for the other."""
        assert self.server is not None and self.client is not None
        for _ in range(10_000):
            self.clock.advance(0)
            if self.to_server and self.server_closed is None:
                self.server.message_received(decode_message(self.to_server.pop(0)))
                continue
            if self.to_client and self.client_closed is None:
                self.client.message_received(decode_message(self.to_client.pop(0)))
                continue
            # Frames written before a close still arrive; after that the other side sees EOF.
            if self.server_closed is not None and self.client_closed is None and not self.to_client:
                self.client.connection_lost()
                continue
            if self.client_closed is not None and self.server_closed is None and not self.to_server:
                self.server.connection_lost()
                continue
            return
        raise AssertionError("the pair never went quiet")


def _embedded(datadir: Any, clock: Any) -> Any:
    from twisted_paychan.chain.embedded.chain import EmbeddedChain

    return EmbeddedChain.open(datadir, clock)


def full_cycle(pair: Pair, settings: ClientSettings, payments: int = 3, amount: int = 1000) -> bytes:
    """What a channel's life is in the months tests (issue #21): open, pay ``payments`` times,
    close (the client asks, the server settles); the contract txid."""
    client = pair.connect(settings)
    txid: bytes = result_of(client.opened).contract_txid
    for _ in range(payments):
        d = client.pay(amount)
        pair.pump()
        result_of(d)
    d = client.settle()
    pair.pump()
    result_of(d)
    return txid
