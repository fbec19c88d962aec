"""
A metered service: one TCP connection carries both the application's own requests and the
payment channel's messages, and the server answers each request only once the payment for it
has been acknowledged (the PAYMENT_ACK is on the wire).

The application protocol frames everything with a 4-byte length (Twisted's
``Int32StringReceiver``); the first byte of a frame says what it holds:

    C + a TwoWayChannelMessage   the channel (either way)
    Q + JSON {"id", "query"}     a request (client to server)
    A + JSON {"id", "answer"}    its answer (server to client)

The client sends a request and pays for it at once, naming the request's id in the payment's
``info``; the server keeps the request until that payment is stored and acknowledged, then
answers it. Both sides use the level-2 API (``ServerChannelManager.connection`` and
``ClientChannelManager.new_connection``): a channel object with a ``send`` and a ``close``
callable, fed the channel frames the application protocol receives.

Run it (a regtest chain in a temporary directory, server and client in this process)::

    python examples/metered_service.py --requests 5

It prints each answer and, last, one JSON line with what the money did, checked on the chain.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Optional

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.chain.embedded.chain import EmbeddedChain
from twisted_paychan.chain.types import TxState, display_hex
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ClientSettings, ServerSettings
from twisted_paychan.net.client_channel import ClientChannel
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.net.server_channel import IServerHandler, ServerChannel
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.store.memory import MemoryChannelStore
from twisted_paychan.wallet.memory import MemoryWallet
from twisted_paychan.wire.messages import MT, TwoWayChannelMessage, decode_message, encode_message

CHANNEL, REQUEST, ANSWER = b"C", b"Q", b"A"
#: What one request costs, in satoshis.
PRICE = 1000
SERVER_ID = b"metered-service-example".ljust(32, b"\0")


def serve(query: str) -> str:
    """The service itself: anything worth paying for."""
    return query.upper()


class FramedProtocol(Int32StringReceiver):
    """Tagged frames both ends share."""

    MAX_LENGTH = 32768  # a channel frame (32767) plus its tag

    def send_frame(self, tag: bytes, body: bytes) -> None:
        self.sendString(tag + body)  # type: ignore[no-untyped-call]  # Twisted's, unannotated

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


@implementer(IServerHandler)
class MeteredServerProtocol(FramedProtocol):
    """The server end: the protocol is also the channel's application handler."""

    def __init__(self, manager: ServerChannelManager) -> None:
        self.manager = manager
        self.channel: Optional[ServerChannel] = None
        self.requests: dict[str, str] = {}  # id -> query, not answered yet
        self.paid: list[str] = []  # ids whose payment is stored, in the order of their acks
        self.acknowledged: set[str] = set()  # ids whose PAYMENT_ACK is on the wire

    def connectionMade(self) -> None:
        self.channel = self.manager.connection(self, self._send_channel, self._channel_closed)

    def stringReceived(self, frame: bytes) -> None:
        tag, body = frame[:1], frame[1:]
        if tag == CHANNEL and self.channel is not None:
            self.channel.message_received(decode_message(body))
        elif tag == REQUEST:
            request = json.loads(body)
            self.requests[request["id"]] = request["query"]
            self._answer(request["id"])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.channel is not None:
            self.channel.connection_lost()

    # -- the channel's send and close -------------------------------------------------------

    def _send_channel(self, message: TwoWayChannelMessage) -> None:
        self.send_frame(CHANNEL, encode_message(message))
        if message.type == MT.PAYMENT_ACK and self.paid:
            # The ack of the oldest stored payment is written: its request may be answered.
            self.acknowledged.add(self.paid.pop(0))
            for request_id in list(self.acknowledged):
                self._answer(request_id)

    def _channel_closed(self, reason: CloseReason) -> None:
        self.hang_up()

    def _answer(self, request_id: str) -> None:
        if request_id in self.acknowledged and request_id in self.requests:
            self.acknowledged.discard(request_id)
            answer = serve(self.requests.pop(request_id))
            self.send_frame(ANSWER, json.dumps({"id": request_id, "answer": answer}).encode())

    # -- IServerHandler ------------------------------------------------------------------------

    def channel_opened(self, contract_txid: bytes) -> None:
        pass

    def payment_received(self, contract_txid: bytes, increase: int, total: int,
                         info: Optional[bytes]) -> Optional[bytes]:
        if info is None:
            return None  # the initial payment, asked for by the server when the channel opened
        if increase < PRICE:
            raise ValueError(f"a request costs {PRICE} sat, not {increase}")  # refused: ERROR{OTHER}
        self.paid.append(info.decode())
        return b"receipt for " + info

    def channel_closed(self, reason: CloseReason) -> None:
        pass  # the transport is closed by the channel's close callable (_channel_closed)


class MeteredClientProtocol(FramedProtocol):
    """The client end: requests go out with their payment; answers come back by id."""

    def __init__(self, manager: ClientChannelManager, settings: ClientSettings, signer: Any) -> None:
        self.manager = manager
        self.settings = settings
        self.signer = signer
        self.channel: Optional[ClientChannel] = None
        self.answers: dict[str, defer.Deferred[str]] = {}
        self._next = 0

    def connectionMade(self) -> None:
        self.channel = self.manager.new_connection(self.settings, SERVER_ID, self.signer, self._send_channel,
                                                   lambda reason: self.hang_up())
        self.channel.start()

    def _send_channel(self, message: TwoWayChannelMessage) -> None:
        self.send_frame(CHANNEL, encode_message(message))

    def stringReceived(self, frame: bytes) -> None:
        tag, body = frame[:1], frame[1:]
        if tag == CHANNEL and self.channel is not None:
            self.channel.message_received(decode_message(body))
        elif tag == ANSWER:
            answer = json.loads(body)
            self.answers.pop(answer["id"]).callback(answer["answer"])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.channel is not None:
            self.channel.connection_lost()

    async def ask(self, query: str) -> tuple[str, Optional[bytes]]:
        """Send ``query``, pay for it, and wait for the answer (and the payment's receipt)."""
        assert self.channel is not None
        self._next += 1
        request_id = f"r{self._next}"
        answered: defer.Deferred[str] = defer.Deferred()
        self.answers[request_id] = answered
        self.send_frame(REQUEST, json.dumps({"id": request_id, "query": query}).encode())
        ack = await self.channel.pay(PRICE, request_id.encode())
        return await answered, ack.info


async def run(reactor: Any, workdir: Path, requests: int) -> dict[str, Any]:
    chain = EmbeddedChain.open(workdir / "chain", reactor)
    try:
        server_wallet, client_wallet = MemoryWallet(chain), MemoryWallet(chain)
        chain.mine(1, address_to_script(await client_wallet.new_address(), REGTEST))
        chain.mine(100)  # the coinbase matures

        server = ServerChannelManager(server_wallet, chain, MemoryChannelStore(), ServerSettings(), reactor)
        await server.start()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: MeteredServerProtocol(server)))
        client = ClientChannelManager(client_wallet, chain, MemoryChannelStore(), reactor)
        settings = ClientSettings(channel_value=100_000, fee_rate=1000)
        protocol = MeteredClientProtocol(client, settings, await client_wallet.new_channel_key())
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), protocol)
        assert protocol.channel is not None
        opened = await protocol.channel.opened
        print(f"channel {display_hex(opened.contract_txid)} open")
        for i in range(requests):
            answer, receipt = await protocol.ask(f"request number {i}")
            print(f"{answer!r} ({receipt.decode() if receipt else 'no receipt'})")
        settlement = await protocol.channel.settle()
        assert isinstance(settlement, bytes)
        await port.stopListening()

        chain.mine(1)
        from bitcoin.core import CTransaction

        tx = CTransaction.deserialize(settlement)
        confirmed = (await chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
        [record] = await server.list_channels()
        summary = {
            "requests": requests,
            "server_value": record.best_value,  # b: the initial payment plus one PRICE a request
            "client_change": tx.vout[0].nValue,  # the settlement's first output pays the client
            "server_payout": sum(o.nValue for o in tx.vout[1:]),
            "settlement_confirmed": confirmed,
            "server_wallet": (await server_wallet.balance()).total,
        }
        server.stop()
        client.stop()
        return summary
    finally:
        chain.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A metered service over a payment channel.")
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()

    async def go(reactor: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="metered-") as workdir:
            summary = await run(reactor, Path(workdir), args.requests)
        print(json.dumps(summary))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
