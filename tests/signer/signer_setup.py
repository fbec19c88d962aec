"""A signer in the test process (its wallet in a temporary SQLite file, cheap scrypt), and the
pieces a request is made of: a client key, a contract, the client's signed payments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from zope.interface import implementer

from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.bitcoin.keys import Signer
from twisted_paychan.bitcoin.payment import sign_payment
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.transactions import make_transaction, serialize, tx_input, tx_output
from twisted_paychan.bitcoin.txid import txid
from twisted_paychan.constants import FINAL_SEQUENCE, TX_VERSION
from twisted_paychan.signer.ledger import Ledger
from twisted_paychan.signer.service import SignerFactory, SigningService
from twisted_paychan.wallet.crypto import ScryptParams
from twisted_paychan.wallet.remote import SignerLink, SignerWallet
from twisted_paychan.wallet.sqlite import SqliteWallet

NOW = 1_700_000_000
TEST_SCRYPT = ScryptParams(n=2**10, r=8, p=1)
VALUE = 1_000_000


def signing_service(tmp_path: Path, daily_limit: int = 100_000, clock: Any = None) -> SigningService:
    if clock is None:
        clock = Clock()
        clock.advance(NOW)
    wallet = SqliteWallet.open(tmp_path / "wallet.sqlite", None, passphrase="signer", scrypt=TEST_SCRYPT)
    return SigningService(wallet, Ledger(str(tmp_path / "signer.sqlite")), clock, daily_limit)


@dataclass
class Channel:
    """A channel to the signer's key ``server_key``, funded by a contract that pays it."""

    version: int
    client: Signer
    server_key: bytes
    expiry: int
    script: ChannelScript
    contract: bytes
    contract_txid: bytes

    @classmethod
    def open(cls, service: SigningService, version: int = 2, value: int = VALUE) -> "Channel":
        client = Signer(bytes(31) + bytes([7]))
        server_key = service.channel_key()
        expiry = NOW + 86400
        script = ChannelScript(version, client.public_key, server_key, expiry)
        contract = make_transaction([tx_input(b"\x11" * 32, 0, FINAL_SEQUENCE)], [tx_output(value, script.script_pubkey)],
                                    0, TX_VERSION)
        return cls(version, client, server_key, expiry, script, serialize(contract), txid(contract))

    def payment(self, client_change: int) -> bytes:
        """The client's signature on the payment leaving it ``client_change``."""
        return sign_payment(self.client, self.script, self.contract_txid, client_change)

    def settle(self, service: SigningService, client_change: int, rates: tuple[int, ...] = (1000,),
               contract: bytes = b"") -> tuple[bytes, int, int, bytes]:
        return service.sign_settlement(self.version, contract or self.contract, self.client.public_key, self.server_key,
                                       self.expiry, client_change, self.payment(client_change), list(rates))


@implementer(IStreamClientEndpoint)
class PumpedEndpoint:
    """Connects the ``signer:`` backend to a signer in the test process over
    ``twisted.test.iosim``: real AMP boxes both ways, no socket; :meth:`pump` delivers them.
    :meth:`stop` is the signer going away (connections dropped, new ones refused)."""

    def __init__(self, service: SigningService, clock: Clock) -> None:
        self.factory = SignerFactory(service)
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.up = True

    def connect(self, factory: Any) -> "defer.Deferred[Any]":
        if not self.up:
            return defer.fail(ConnectionRefusedError("the signer is stopped"))
        server = self.factory.buildProtocol(None)
        client = factory.buildProtocol(None)
        self.pumps.append(iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client),
                                        greet=False, clock=self.clock))
        return defer.succeed(client)

    def pump(self) -> None:
        for pump in list(self.pumps):
            pump.flush()

    def stop(self) -> None:
        self.up = False
        for pump in self.pumps:
            pump.serverIO.loseConnection()
        self.pump()
        self.pumps.clear()

    def start(self) -> None:
        self.up = True


def signer_wallet(service: SigningService, chain: Any, clock: Clock) -> tuple[SignerWallet, PumpedEndpoint]:
    """The ``signer:`` backend's wallet, started, connected to ``service`` in memory."""
    endpoint = PumpedEndpoint(service, clock)
    wallet = SignerWallet(chain, REGTEST, SignerLink(endpoint, clock, REGTEST, "memory"))
    wallet.start()
    endpoint.pump()
    assert wallet.signer_problem() is None
    return wallet, endpoint
