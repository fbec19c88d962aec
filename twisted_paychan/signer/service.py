"""
The signer's side of the protocol: :class:`SigningService` judges each request with
``signer.policy``, signs with the wallet's keys, records what it must remember in the ledger
first, and logs every signature in one line; :class:`SignerProtocol` is the AMP responder of one
connection to it.

The wallet is an ordinary :class:`~twisted_paychan.wallet.sqlite.SqliteWallet` (encrypted at
rest under the passphrase file), used for its keys only: the signer follows no chain, and
learns of coins from the funding requests, whose signatures commit to what it is told.
"""

from __future__ import annotations

from typing import Any, Optional, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

from twisted_paychan.bitcoin.addresses import p2wpkh_script
from twisted_paychan.bitcoin.refund import server_refund_signature
from twisted_paychan.bitcoin.scripts import hash160
from twisted_paychan.bitcoin.settlement import SettlementUnaffordable, build_settlement
from twisted_paychan.chain.interfaces import InsufficientFunds
from twisted_paychan.chain.types import FundedTransaction, OutPoint, Utxo, display_hex
from twisted_paychan.constants import FEE_RATE_FLOOR, MAX_MONEY
from twisted_paychan.signer import policy, protocol as p
from twisted_paychan.signer.ledger import DAY, Ledger
from twisted_paychan.wallet.coinselect import P2WPKH_INPUT_WEIGHT, Candidate, dust_threshold, select_coins
from twisted_paychan.wallet.keys import KeyPurpose, ScriptType
from twisted_paychan.wallet.sqlite import SqliteWallet
from twisted_paychan.wallet.txbuild import SpendableCoin, build_funding_transaction, build_sweep_transaction

T = TypeVar("T")

#: The highest settlement or funding fee rate signed unless ``--max-fee-rate`` says otherwise
#: (sat per 1000 vbytes): 100 sat/vB, far above what a settlement needs, far below a fee that
#: gives a channel's income away.
DEFAULT_MAX_FEE_RATE = 100_000


def _now(d: "Deferred[T]") -> T:
    """The result of a wallet call that answers at once (the signer's wallet follows no chain)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the wallet did not answer at once"
    if isinstance(out[0], BaseException) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    result: T = out[0]
    return result


class SigningService:
    """The keys, the rules, the ledger: one per signer process, shared by its connections."""

    log = Logger(namespace="paychan.signer")

    def __init__(self, wallet: SqliteWallet, ledger: Ledger, clock: IReactorTime, daily_limit: int,
                 max_fee_rate: int = DEFAULT_MAX_FEE_RATE) -> None:
        self.wallet = wallet
        self.ledger = ledger
        self.clock = clock
        self.daily_limit = daily_limit
        self.max_fee_rate = max_fee_rate

    def _now_seconds(self) -> int:
        return int(self.clock.seconds())

    def refuse(self, what: str, e: p.Refused) -> None:
        self.log.warn("refused {what}: {why}", what=what, why=str(e))

    # -- keys and scripts -------------------------------------------------------------------

    def channel_keys(self) -> set[bytes]:
        return set(self.wallet.public_keys(KeyPurpose.CHANNEL))

    def keys(self, start: int) -> tuple[list[dict[str, Any]], Optional[int]]:
        """The receive and payout keys from the ``start``-th, a page of them, and where the next
        page starts (None after the last). Channel keys are not listed: they receive nothing."""
        held = [(purpose, key) for purpose in (KeyPurpose.RECEIVE, KeyPurpose.PAYOUT)
                for key in self.wallet.public_keys(purpose)]
        page = []
        for purpose, key in held[start:start + p.PAGE]:
            script_type = self._script_type(key)
            page.append({"public_key": key, "purpose": purpose.value,
                         "script_type": "" if script_type is None else script_type.value})
        return page, (start + p.PAGE if start + p.PAGE < len(held) else None)

    def _script_type(self, public_key: bytes) -> Optional[ScriptType]:
        for script_type in ScriptType:
            if self.wallet.is_mine(script_type.script_for(public_key)):
                return script_type
        return None

    def _key_of(self, script: bytes) -> bytes:
        # Newest first: the script asked about is nearly always the one just handed out.
        for key in reversed(self.wallet.public_keys()):
            if any(script_type.script_for(key) == script for script_type in ScriptType):
                return key
        raise AssertionError("the wallet handed out a script of no key")

    def channel_key(self) -> bytes:
        # Kept at once: the server records it with the channel, synchronously, later; a
        # handshake that ends first leaves one unused key here, never a channel without its key.
        signer = _now(self.wallet.provisional_channel_key())
        public_key = bytes(signer.public_key)
        self.wallet.keep_channel_key(public_key)
        self.log.info("handed out channel key {key}", key=public_key.hex())
        return public_key

    def payout_script(self, label: bytes) -> tuple[bytes, bytes]:
        """(script, public key) of the payout for channel ``label``, or the shared one."""
        if label:
            script = _now(self.wallet.settlement_payout_script(label))
        else:
            script = _now(self.wallet.payout_script())
        return script, self._key_of(script)

    def new_address(self, script_type: str) -> tuple[bytes, bytes]:
        from twisted_paychan.bitcoin.addresses import address_to_script

        if script_type != ScriptType.P2WPKH.value:
            # A P2PKH signature does not commit to the coin's value, which the server states:
            # its coins could not be judged against the daily limit.
            raise p.Refused(f"the signer makes P2WPKH addresses only, not {script_type!r}")
        kind = ScriptType.P2WPKH
        script = address_to_script(_now(self.wallet.new_address(kind)), self.wallet.network)
        return script, self._key_of(script)

    # -- signatures -------------------------------------------------------------------------

    def sign_settlement(self, version: int, contract: bytes, client_key: bytes, server_key: bytes, expiry: int,
                        client_change: int, client_signature: bytes, rates: list[int]) -> tuple[bytes, int, int, bytes]:
        """(settlement or b"", rate, fee or -1, the payout's public key)."""
        try:
            terms = policy.settlement(version, contract, client_key, server_key, expiry, client_change,
                                      client_signature, rates, self.channel_keys(), self.ledger.best_payment,
                                      self.max_fee_rate)
        except p.Refused as e:
            self.refuse("a settlement", e)
            raise
        # Remembered before anything is signed: no later request can pay the server less.
        self.ledger.note_best_payment(terms.contract_txid, terms.best_value, self._now_seconds())
        payout, payout_key = self.payout_script(terms.contract_txid)
        signer = self.wallet.signer_for(server_key)
        cheapest: Optional[tuple[int, int]] = None
        for rate in rates:
            try:
                built = build_settlement(terms.channel, terms.contract_txid, terms.value, client_change,
                                         client_signature, signer, payout, rate)
            except SettlementUnaffordable as e:
                if cheapest is None or e.fee < cheapest[0]:
                    cheapest = (e.fee, rate)
                continue
            self.log.info("signed settlement {txid} of channel {channel}: server {payout} sat (best payment {best}), "
                          "client change {change} sat, fee {fee} sat at {rate} sat/kB",
                          txid=display_hex(bytes(built.tx.GetTxid())), channel=display_hex(terms.contract_txid),
                          payout=built.payout_value or 0, best=terms.best_value, change=client_change, fee=built.fee,
                          rate=rate)
            return built.raw, rate, built.fee, payout_key
        self.log.info("settlement of channel {channel} unaffordable (best payment {best} sat): nothing signed",
                      channel=display_hex(terms.contract_txid), best=terms.best_value)
        fee, rate = cheapest if cheapest is not None else (-1, rates[0])
        return b"", rate, fee, payout_key

    def sign_refund(self, client_key: bytes, server_key: bytes, expiry: int, raw: bytes) -> bytes:
        try:
            channel, refund, contract_txid = policy.refund(client_key, server_key, expiry, raw, self.channel_keys(),
                                                           self.ledger.refund_signed(server_key),
                                                           self._now_seconds())
        except p.Refused as e:
            self.refuse("a refund", e)
            raise
        self.ledger.note_refund(server_key, contract_txid, self._now_seconds())
        signature = server_refund_signature(self.wallet.signer_for(server_key), refund, channel)
        self.log.info("signed v1 refund of channel {channel} with key {key}: locked until {expiry}, "
                      "{value} sat back to the client", channel=display_hex(contract_txid), key=server_key.hex(),
                      expiry=expiry, value=sum(o.nValue for o in refund.vout))
        return signature

    def fund(self, script: bytes, amount: int, fee_rate: int, coins: list[Utxo]) -> FundedTransaction:
        what = "a sweep" if amount == 0 else "a funding"
        try:
            funded, outflow = self._fund(script, amount, fee_rate, coins)
        except p.Refused as e:
            self.refuse(what, e)
            raise
        now = self._now_seconds()
        self.ledger.note_spent(funded.txid, outflow, now)
        self.log.info("signed {what} {txid}: {outflow} sat leave the wallet (fee {fee} sat, {inputs} input(s)); "
                      "{spent} of {limit} sat in the last 24 hours", what=what[2:], txid=display_hex(funded.txid),
                      outflow=outflow, fee=funded.fee, inputs=len(funded.spent),
                      spent=self.ledger.spent_since(now - DAY), limit=self.daily_limit)
        return funded

    def _fund(self, script: bytes, amount: int, fee_rate: int, coins: list[Utxo]) -> tuple[FundedTransaction, int]:
        if not script:
            raise p.Refused("empty output script")
        rate = max(fee_rate, FEE_RATE_FLOOR)
        if rate > self.max_fee_rate:
            raise p.Refused(f"fee rate {rate} sat/kB is above the signer's highest ({self.max_fee_rate})")
        if not 0 <= amount <= MAX_MONEY or (amount and amount < dust_threshold(script)):
            raise p.Refused(f"amount out of range or dust: {amount}")
        keys = {p2wpkh_script(hash160(k)): k for k in self.wallet.public_keys()
                if self.wallet.is_mine(p2wpkh_script(hash160(k)))}
        if len(coins) > p.PAGE:
            raise p.Refused(f"{len(coins)} coins: at most {p.PAGE} in one transaction")
        spendable = []
        for coin in coins:
            key = keys.get(coin.script_pubkey)
            if key is None:
                raise p.Refused(f"coin {display_hex(coin.outpoint.txid)}:{coin.outpoint.index} is not a P2WPKH coin "
                                "of this signer's")
            spendable.append(SpendableCoin(coin, self.wallet.signer_for(key), ScriptType.P2WPKH))
        own = self.wallet.is_mine(script)
        spent_today = self.ledger.spent_since(self._now_seconds() - DAY)
        if amount == 0:
            total = sum(c.utxo.value for c in spendable)
            funded = build_sweep_transaction(spendable, script, rate) if spendable else None
            if funded is None:
                raise p.Insufficient(f"{total + dust_threshold(script)} {total}")
            outflow = funded.fee if own else total
        else:
            change, _ = self.payout_script(b"")
            candidates = [Candidate(c.utxo, P2WPKH_INPUT_WEIGHT, witness=True) for c in spendable]
            try:
                selection = select_coins(candidates, amount, script, change, rate)
            except InsufficientFunds as e:
                raise p.Insufficient(f"{e.needed} {e.available}") from None
            chosen = {c.utxo.outpoint for c in selection.coins}
            funded = build_funding_transaction([c for c in spendable if c.utxo.outpoint in chosen], amount, script,
                                               change if selection.change else None, rate)
            outflow = funded.fee + (0 if own else amount)
        policy.within_daily_limit(outflow, spent_today, self.daily_limit)
        return funded, outflow


class SignerProtocol(amp.AMP):
    """One connection from a server's ``signer:`` backend."""

    def __init__(self, service: SigningService) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.service = service

    @p.Hello.responder
    def hello(self) -> dict[str, Any]:
        return {"network": self.service.wallet.network.name, "version": p.PROTOCOL_VERSION}

    @p.Scripts.responder
    def scripts(self, start: int) -> dict[str, Any]:
        keys, following = self.service.keys(start)
        return {"keys": keys, "next": following}

    @p.ChannelKey.responder
    def channel_key(self) -> dict[str, Any]:
        return {"public_key": self.service.channel_key()}

    @p.PayoutScript.responder
    def payout_script(self, label: bytes) -> dict[str, Any]:
        script, public_key = self.service.payout_script(label)
        return {"script": script, "public_key": public_key}

    @p.NewAddress.responder
    def new_address(self, script_type: str) -> dict[str, Any]:
        script, public_key = self.service.new_address(script_type)
        return {"script": script, "public_key": public_key}

    @p.SignSettlement.responder
    def sign_settlement(self, version: int, contract: bytes, client_key: bytes, server_key: bytes, expiry: int,
                        client_change: int, client_signature: bytes, rates: list[int]) -> dict[str, Any]:
        tx, rate, fee, payout_key = self.service.sign_settlement(version, contract, client_key, server_key, expiry,
                                                                 client_change, client_signature, rates)
        return {"settlement": tx, "rate": rate, "fee": fee, "payout_key": payout_key}

    @p.SignRefund.responder
    def sign_refund(self, client_key: bytes, server_key: bytes, expiry: int, refund: bytes) -> dict[str, Any]:
        return {"signature": self.service.sign_refund(client_key, server_key, expiry, refund)}

    @p.Fund.responder
    def fund(self, script: bytes, amount: int, fee_rate: int, coins: list[dict[str, Any]]) -> dict[str, Any]:
        utxos = [Utxo(OutPoint(c["txid"], c["index"]), c["value"], c["script"], c.get("height"), c["coinbase"])
                 for c in coins]
        funded = self.service.fund(script, amount, fee_rate, utxos)
        return {"tx": funded.tx, "txid": funded.txid, "fee": funded.fee, "change_index": funded.change_index}


class SignerFactory(Factory):
    noisy = False

    def __init__(self, service: SigningService) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> SignerProtocol:
        return SignerProtocol(self.service)
