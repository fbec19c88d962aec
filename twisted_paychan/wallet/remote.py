"""
``twistd paychan --wallet signer:ENDPOINT``: a wallet whose keys are in another process,
``paychan signer`` (``twisted_paychan.signer``), which signs only what a payment-channel server
needs. The server keeps no private key and writes no key file: it holds public keys, the scripts
they pay, and the coins the chain shows for them, in memory, and asks the signer for the rest.

What stays synchronous in :class:`~twisted_paychan.chain.interfaces.IWallet` works without a
private key: ``keep_channel_key`` only records a key the signer stored when it handed it out
(``ChannelKey``), and ``signer_for`` gives a :class:`RemoteKey` that knows its public key. The
three things a server signs go to the signer, asynchronously:

- the settlement, through :class:`ISettlementSigner` (``net.server_manager`` asks a wallet that
  provides it instead of signing with ``signer_for``); while the signer is unreachable it waits
  (:data:`SETTLEMENT_WAIT`), and the channel's settlement is retried after that;
- the v1 refund, through :class:`IPreparedSigner`: the connection asks the key to fetch the
  signature before the handshake machine, which signs synchronously, reaches it;
- fundings and sweeps (``fund``/``sweep``), which return Deferreds anyway.

Payments need no server signature, so they flow whatever the signer's state. A new channel
needs a key: without the signer the handshake ends with ``ERROR{OTHER}`` (``channel.server``).
Whether the signer is reachable is :class:`ISignerStatus`, for ``/v1/health`` and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from twisted_paychan.bitcoin.addresses import Network, script_to_address
from twisted_paychan.bitcoin.refund import refund_sighash
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.transactions import parse_transaction
from twisted_paychan.chain.interfaces import IPreparedSigner, ISigner, InsufficientFunds
from twisted_paychan.chain.types import FundedTransaction, OutPoint, display_hex
from twisted_paychan.channel.errors import CloseReason, ErrorCode, RemoteProtocolError
from twisted_paychan.channel.records import ServerChannelRecord
from twisted_paychan.constants import FEE_RATE_FLOOR, SIGHASH_NONE_ANYONECANPAY
from twisted_paychan.signer import protocol as p
from twisted_paychan.signer.protocol import Refused, SignerUnavailable
from twisted_paychan.wallet.backends import IServedWallet
from twisted_paychan.wallet.base import BaseWallet, FundedRecord, FundedState, _coin_order, checked_payment
from twisted_paychan.wallet.coinselect import fee_for_weight
from twisted_paychan.wallet.keys import KeyPurpose, ScriptType, WalletKey

__all__ = ["ISettlementSigner", "IPreparedSigner", "ISignerStatus", "RemoteKey", "SignerLink", "SignerWallet",
           "SignedSettlement", "SignerUnavailable", "Refused"]

#: How long a settlement waits for an unreachable signer before it fails (and the lifecycle
#: retries it ``retry_interval`` later): a signer restarted meanwhile signs it at once.
SETTLEMENT_WAIT = 300.0
#: How long any one request may take once sent (a hung signer must not hang a handshake).
CALL_TIMEOUT = 30.0
#: What a v1 client is told when the signer does not sign its refund (refused, or unreachable).
SIGNER_DID_NOT_SIGN = "the server's signer did not sign"


@dataclass(frozen=True)
class SignedSettlement:
    """The signer's answer: the signed settlement and its rate, or (``tx`` empty) no rate was
    affordable; ``fee`` is the cheapest refusal's fee (None: not known)."""

    tx: bytes
    rate: int
    fee: Optional[int]


class ISettlementSigner(Interface):
    """A wallet that signs settlements asynchronously (the server asks it, not ``signer_for``)."""

    def sign_settlement(record: ServerChannelRecord, rates: tuple[int, ...]) -> "Deferred[SignedSettlement]":
        """The settlement of ``record`` for its best payment, at the first affordable rate of
        ``rates``; fails with :class:`Refused` or :class:`SignerUnavailable`."""


class ISignerStatus(Interface):
    """A wallet whose signatures depend on another process that may be unreachable."""

    failures = Attribute("How many requests failed for want of a signer since start: an int.")

    def signer_problem() -> Optional[str]:
        """Why the signer cannot sign now, or None when it can."""


@implementer(IPreparedSigner)
class RemoteKey:
    """A key of the signer's: its public half, and its v1 refund signature once fetched."""

    def __init__(self, public_key: bytes, link: "SignerLink") -> None:
        self.public_key = bytes(public_key)
        self._link = link
        self._prepared: dict[bytes, bytes] = {}
        self._refused: Optional[str] = None

    def prepare_refund(self, client_key: bytes, expiry: int, refund: bytes) -> "Deferred[None]":
        try:
            digest = refund_sighash(parse_transaction(refund), ChannelScript(1, client_key, self.public_key),
                                    SIGHASH_NONE_ANYONECANPAY)
        except ValueError:
            return defer.succeed(None)  # the machine refuses the message itself

        def signed(answer: dict[str, Any]) -> None:
            self._prepared[digest] = bytes(answer["signature"])[:-1]  # sign() gives no sighash byte

        def failed(f: Failure) -> None:
            self._refused = f.getErrorMessage()

        d = self._link.call(p.SignRefund, client_key=bytes(client_key), server_key=self.public_key,
                            expiry=int(expiry), refund=bytes(refund))
        return d.addCallbacks(signed, failed)

    def sign(self, digest: bytes) -> bytes:
        signature = self._prepared.pop(bytes(digest), None)
        if signature is not None:
            return signature
        why = self._refused or "the signer signs settlements and refunds, not digests"
        raise RemoteProtocolError(ErrorCode.OTHER, f"{SIGNER_DID_NOT_SIGN}: {why}", CloseReason.SERVER_REQUESTED_CLOSE)

    def __repr__(self) -> str:
        return f"<RemoteKey {self.public_key.hex()}>"


class _LinkProtocol(amp.AMP):
    def __init__(self, link: "SignerLink") -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._link = link

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self._link._lost(reason)


class _LinkFactory(Factory):
    noisy = False

    def __init__(self, link: "SignerLink") -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> _LinkProtocol:
        return _LinkProtocol(self.link)


class SignerLink:
    """The connection to the signer, made again whenever it drops (backing off to every 5 s).
    Each connection starts with ``Hello`` (the same network and protocol) and ``Scripts``."""

    log = Logger()

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime, network: Network,
                 description: str) -> None:
        self.clock = clock
        self.network = network
        self.description = description
        self.problem: Optional[str] = "not connected yet"
        self.failures = 0
        #: Called with each connection's ``Scripts`` answer (the wallet loads the keys).
        self.on_scripts: Callable[[list[dict[str, Any]]], None] = lambda keys: None
        self._service = ClientService(endpoint, _LinkFactory(self), retryPolicy=backoffPolicy(0.5, 5.0),
                                      clock=clock, prepareConnection=self._hello)

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> "Deferred[None]":
        if not self._service.running:
            return defer.succeed(None)
        self.problem = "stopped"
        d: Deferred[None] = self._service.stopService()
        return d

    def _hello(self, proto: Any) -> "Deferred[None]":
        def checked(answer: dict[str, Any]) -> "Deferred[None]":
            if answer["version"] != p.PROTOCOL_VERSION or answer["network"] != self.network.name:
                raise SignerUnavailable(f"the signer at {self.description} speaks protocol {answer['version']} on "
                                        f"{answer['network']}; this server needs {p.PROTOCOL_VERSION} on "
                                        f"{self.network.name}")
            return page(0)

        def page(start: int) -> "Deferred[None]":
            scripts: Deferred[dict[str, Any]] = proto.callRemote(p.Scripts, start=start)
            return scripts.addCallback(paged)

        def paged(answer: dict[str, Any]) -> Optional["Deferred[None]"]:
            self.on_scripts(answer["keys"])
            return None if answer.get("next") is None else page(answer["next"])

        def loaded(_: None) -> None:
            if self.problem is not None:
                self.log.info("the signer at {where} answers", where=self.description)
            self.problem = None

        def refused(f: Failure) -> Failure:
            self._down(f.getErrorMessage())
            return f

        d: Deferred[dict[str, Any]] = proto.callRemote(p.Hello)
        return d.addCallback(checked).addCallback(loaded).addErrback(refused)

    def _lost(self, reason: Failure) -> None:
        if self.problem is None:
            self._down(f"the connection to the signer at {self.description} was lost")

    def _down(self, why: str) -> None:
        if self.problem != why:
            self.log.warn("signer unavailable: {why}", why=why)
        self.problem = why

    def call(self, command: type[amp.Command], wait: Optional[float] = None, **arguments: Any) -> "Deferred[dict[str, Any]]":
        """Send ``command``: fails with :class:`Refused` (and :class:`p.Insufficient`) as the
        signer said, or :class:`SignerUnavailable`. Without ``wait``, a signer not connected
        now fails it after one more attempt to connect; with it, it waits that many seconds."""
        if wait is None:
            d: Deferred[Any] = self._service.whenConnected(failAfterFailures=1)
        else:
            d = self._service.whenConnected()
            d.addTimeout(wait, self.clock)

        def send(proto: amp.AMP) -> "Deferred[dict[str, Any]]":
            sent: Deferred[dict[str, Any]] = proto.callRemote(command, **arguments)
            return sent.addTimeout(CALL_TIMEOUT, self.clock)

        def unavailable(f: Failure) -> "Deferred[dict[str, Any]]":
            if not f.check(Refused, p.Insufficient, SignerUnavailable):
                self.failures += 1
                if f.check(defer.TimeoutError, defer.CancelledError):
                    why = self.problem or f"the signer at {self.description} did not answer in time"
                else:
                    why = self.problem or f"{f.type.__name__ if f.type else 'error'}: {f.getErrorMessage()}"
                    self._down(why)
                f = Failure(SignerUnavailable(why))
            # A failed connection fails the call from inside ClientService's state machine: the
            # caller hears of it a turn later, free to stop the service then.
            return task.deferLater(self.clock, 0, f.raiseException)

        return d.addCallback(send).addErrback(unavailable)


@dataclass(frozen=True, repr=False)
class _PublicKey(WalletKey):
    """A key of the signer's as the server holds it: no secret (``secret`` is empty); what signs
    for it is a :class:`RemoteKey` over ``link``."""

    link: Optional[SignerLink] = None

    def signer(self) -> Any:
        assert self.link is not None
        return RemoteKey(self.public_key, self.link)


@implementer(IServedWallet, ISettlementSigner, ISignerStatus)
class SignerWallet(BaseWallet):
    """IWallet over :class:`SignerLink`: keys and signatures from the signer, coins from the
    chain as for any wallet (``BaseWallet``), nothing written to disk. A server's wallet only:
    a client's channel keys sign every payment, which is the signer's job to refuse."""

    log = Logger()

    def __init__(self, chain: Any, network: Network, link: SignerLink) -> None:
        super().__init__(chain, network)
        self._link = link
        link.on_scripts = self._load_scripts
        #: One funding at a time, from coin choice to reservation (the signer answers between).
        self._funding = DeferredLock()

    # -- the link ---------------------------------------------------------------------------

    @property
    def failures(self) -> int:
        return self._link.failures

    def signer_problem(self) -> Optional[str]:
        return self._link.problem

    def start(self) -> None:
        self._link.start()
        super().start()

    def close(self) -> None:
        super().close()
        self._link.stop()

    def _load_scripts(self, keys: list[dict[str, Any]]) -> None:
        for entry in keys:
            self._hold(entry["public_key"], KeyPurpose(entry["purpose"]),
                       ScriptType(entry["script_type"]) if entry["script_type"] else None)

    def _hold(self, public_key: bytes, purpose: KeyPurpose, script_type: Optional[ScriptType],
              label: Optional[bytes] = None) -> WalletKey:
        held = self._keys.get(bytes(public_key))
        if held is not None:
            if label is not None and label not in self._labels:
                self._labels[label] = held
            return held
        key = _PublicKey(b"", bytes(public_key), purpose, script_type, None, label, self._link)
        self._load_key(key)
        return key

    # -- keys -------------------------------------------------------------------------------

    @property
    def has_seed(self) -> bool:
        """The signer's wallet derives every key from its seed (a payout script per channel);
        the seed's words are the signer's to show (``paychan wallet seed`` in its directory)."""
        return True

    def new_channel_key(self) -> "Deferred[ISigner]":
        return defer.fail(Refused("a signer wallet holds a server's keys only (a client signs each payment)"))

    def provisional_channel_key(self) -> "Deferred[ISigner]":
        def lent(answer: dict[str, Any]) -> ISigner:
            key = _PublicKey(b"", bytes(answer["public_key"]), KeyPurpose.CHANNEL, None, link=self._link)
            self._provisional[key.public_key] = key
            signer: ISigner = key.signer()
            return signer

        return self._link.call(p.ChannelKey).addCallback(lent)

    def track_channel_key(self, public_key: bytes) -> bool:
        raise KeyError("a signer wallet's channel keys are a server's: no payouts to track")

    def new_address(self, script_type: Union[ScriptType, str] = ScriptType.P2WPKH) -> "Deferred[str]":
        kind = ScriptType(script_type)

        def made(answer: dict[str, Any]) -> str:
            self._hold(answer["public_key"], KeyPurpose.RECEIVE, kind)
            return script_to_address(bytes(answer["script"]), self.network)

        return self._link.call(p.NewAddress, script_type=kind.value).addCallback(made)

    def payout_script(self) -> "Deferred[bytes]":
        return self._payout_script(b"")

    def settlement_payout_script(self, contract_txid: bytes) -> "Deferred[bytes]":
        return self._payout_script(bytes(contract_txid))

    def _payout_script(self, label: bytes) -> "Deferred[bytes]":
        known = self._labels.get(label) if label else self._payout
        if known is not None and known.script_pubkey is not None:
            return defer.succeed(known.script_pubkey)

        def made(answer: dict[str, Any]) -> bytes:
            self._hold(answer["public_key"], KeyPurpose.PAYOUT, ScriptType.P2WPKH, label or None)
            return bytes(answer["script"])

        return self._link.call(p.PayoutScript, label=label).addCallback(made)

    # -- signatures -------------------------------------------------------------------------

    def sign_settlement(self, record: ServerChannelRecord, rates: tuple[int, ...]) -> "Deferred[SignedSettlement]":
        if record.best_signature is None:
            return defer.fail(Refused("no payment to settle"))
        if self._link.problem is not None:
            self.log.warn("channel {txid}: the settlement waits for the signer (up to {wait:g} s): {why}",
                          txid=display_hex(record.contract_txid), wait=SETTLEMENT_WAIT, why=self._link.problem)

        def answered(answer: dict[str, Any]) -> SignedSettlement:
            # The signer chose the payout script: its coins are this wallet's to follow.
            self._hold(answer["payout_key"], KeyPurpose.PAYOUT, ScriptType.P2WPKH, bytes(record.contract_txid))
            fee = answer["fee"]
            return SignedSettlement(bytes(answer["settlement"]), answer["rate"], None if fee < 0 else fee)

        d = self._link.call(p.SignSettlement, wait=SETTLEMENT_WAIT, version=record.version, contract=record.contract,
                            client_key=record.client_key, server_key=record.server_key, expiry=record.expiry,
                            client_change=record.value - record.best_value,
                            client_signature=record.best_signature, rates=list(rates))
        return d.addCallback(answered)

    def fund(self, script_pubkey: bytes, amount: int, fee_rate: int) -> "Deferred[FundedTransaction]":
        """See IWallet; the signer signs (within its daily limit) and may refuse (:class:`Refused`)."""
        return self._remote_fund(checked_payment(script_pubkey, amount), amount, max(int(fee_rate), FEE_RATE_FLOOR))

    def sweep(self, script_pubkey: bytes, fee_rate: int) -> "Deferred[FundedTransaction]":
        script_pubkey = bytes(script_pubkey)
        if not script_pubkey:
            raise ValueError("empty output script")
        return self._remote_fund(script_pubkey, 0, max(int(fee_rate), FEE_RATE_FLOOR))

    def _remote_fund(self, script: bytes, amount: int, rate: int) -> "Deferred[FundedTransaction]":
        def choose(_: None) -> "Deferred[FundedTransaction]":
            # The largest first, as many as one request holds (sweep the rest with another).
            coins = [u for u in sorted(self._spendable(), key=_coin_order)
                     if self._script_type(u) is ScriptType.P2WPKH]
            if amount == 0:
                from twisted_paychan.wallet.coinselect import P2WPKH_INPUT_WEIGHT

                coins = [u for u in coins if u.value > fee_for_weight(P2WPKH_INPUT_WEIGHT, rate)]
            coins = coins[:p.PAGE]
            d = self._link.call(p.Fund, script=script, amount=amount, fee_rate=rate, coins=[
                {"txid": u.outpoint.txid, "index": u.outpoint.index, "value": u.value, "script": u.script_pubkey,
                 "height": u.height, "coinbase": u.coinbase} for u in coins])
            return d.addCallbacks(self._signed_funding, _insufficient)

        def locked(_: object) -> "Deferred[FundedTransaction]":
            return self.refresh().addCallback(choose)

        return self._funding.run(locked, None)

    def _signed_funding(self, answer: dict[str, Any]) -> FundedTransaction:
        tx = parse_transaction(bytes(answer["tx"]))
        spent = tuple(OutPoint(bytes(i.prevout.hash), i.prevout.n) for i in tx.vin)
        funded = FundedTransaction(bytes(answer["tx"]), bytes(answer["txid"]), answer["fee"], answer["change_index"],
                                   spent)
        self._persist_funded(funded)
        self._load_funded(FundedRecord(funded, FundedState.RESERVED), funded.spent)
        self.log.info("funded {txid} (signed by the signer): fee {fee} sat, {inputs} input(s)",
                      txid=display_hex(funded.txid), fee=funded.fee, inputs=len(spent))
        return funded

    def reclaim(self, funded_txid: bytes, fee_rate: int) -> "Deferred[FundedTransaction]":
        return defer.fail(Refused("a signer wallet funds no contracts, so it has none to reclaim"))


def _insufficient(f: Failure) -> Failure:
    if f.check(p.Insufficient):
        needed, available = (int(x) for x in f.getErrorMessage().split())
        return Failure(InsufficientFunds(needed, available))
    return f


def open_signer_wallet(description: str, chain: Any, network: Network, reactor: Any) -> SignerWallet:
    """The ``signer:`` backend's wallet for ``--wallet signer:DESCRIPTION``; :class:`ValueError`
    (an ``EndpointError``) for an endpoint that is malformed or a socket others can reach."""
    from twisted_paychan.signer.endpoints import client_endpoint

    endpoint = client_endpoint(reactor, description)
    return SignerWallet(chain, network, SignerLink(endpoint, reactor, network, description))
