"""
Shared pieces of the Appendix A check-matrix tests (``test_check_matrix_server.py``,
``test_check_matrix_client.py``): fixed keys, a stand-in contract, sans-IO machines driven to
each protocol step, crafted signatures, and assertions on the effects a machine returns.

The machines are driven directly (``receive(message, now)`` and the completion methods); no
wallet, chain or store is involved. A contract here is a well-formed transaction whose output 0
locks the channel; its input spends a made-up coin, which is all a machine can see.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import coincurve
from twisted.internet.testing import StringTransport

from twisted_paychan.bitcoin import der, payment, refund
from twisted_paychan.bitcoin.keys import KeySigner
from twisted_paychan.bitcoin.scripts import ChannelScript, p2pkh_script
from twisted_paychan.bitcoin.sighash import payment_sighash_type
from twisted_paychan.bitcoin.signatures import sign
from twisted_paychan.bitcoin.transactions import make_transaction, parse_transaction, serialize, tx_input, tx_output
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import FundedTransaction
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.client import ClientMachine, ClientStep
from twisted_paychan.channel.errors import CloseReason, ErrorCode
from twisted_paychan.channel.server import ServerMachine, ServerStep
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.wire import messages as m
from twisted_paychan.wire import received
from twisted_paychan.wire.framing import CloseKind, MessageProtocol, encode_frame

MT = m.MessageType

NOW = 1_700_000_000
#: V, and the server's defaults the tests rely on (ServerSettings: min_channel_size 100000, P 1000).
VALUE = 1_000_000
MIN_CHANNEL_SIZE = 100_000
MIN_PAYMENT = 1000
#: E as a client with the default 86340 s window accepts it (up to now + 86340 + 60).
CLIENT_EXPIRY = NOW + 86_340

CLIENT_KEY = KeySigner(hashlib.sha256(b"check matrix: client").digest())
SERVER_KEY = KeySigner(hashlib.sha256(b"check matrix: server").digest())
STRANGER = KeySigner(hashlib.sha256(b"check matrix: stranger").digest())
SERVER_ID = hashlib.sha256(b"check matrix: server id").digest()

SELECTOR = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}

# -- keys that must be refused (§2.6, §5 step 5.8, §6 step 5.3, A.2) ---------------------------

_G = coincurve.PrivateKey((1).to_bytes(32, "big")).public_key.format(compressed=False)
_G_Y = int.from_bytes(_G[33:], "big")
#: Canonical compressed form, but x = 5 has no point on secp256k1.
OFF_CURVE_COMPRESSED = b"\x02" + (5).to_bytes(32, "big")
#: Canonical uncompressed form, but (Gx, Gy + 1) is not on the curve.
OFF_CURVE_UNCOMPRESSED = _G[:33] + (_G_Y + 1).to_bytes(32, "big")
#: G in hybrid form (06/07 + x + y): a point libsecp256k1 parses, but not a canonical encoding.
HYBRID_G = bytes((0x06 | (_G_Y & 1),)) + _G[1:]

NON_CANONICAL_KEYS = {
    "hybrid-06": HYBRID_G,
    "hybrid-wrong-parity-07": bytes((0x07 ^ (_G_Y & 1),)) + _G[1:],
    "33-bytes-prefix-04": b"\x04" + _G[1:33],
    "65-bytes-prefix-02": b"\x02" + _G[1:],
    "32-bytes": _G[1:33],
    "34-bytes": b"\x02" + _G[1:33] + b"\x00",
    "empty": b"",
}
OFF_CURVE_KEYS = {"compressed-x=5": OFF_CURVE_COMPRESSED, "uncompressed-y+1": OFF_CURVE_UNCOMPRESSED}

# -- transactions ------------------------------------------------------------------------------

_FUNDING_COIN = hashlib.sha256(b"check matrix: funding coin").digest()


def contract_tx(outputs: Iterable[tuple[int, bytes]], coin: bytes = _FUNDING_COIN) -> bytes:
    """A signed-looking contract: one input spending a made-up coin, the given outputs."""
    inputs = [tx_input(coin, 0, 0xFFFFFFFF, b"\x51")]
    return serialize(make_transaction(inputs, [tx_output(v, s) for v, s in outputs]))


def funded(script_pubkey: bytes, value: int) -> FundedTransaction:
    """What a wallet's ``fund`` gives the client for a ``FundContract`` effect."""
    raw = contract_tx([(value, script_pubkey)])
    return FundedTransaction(raw, txid_of(raw), 1000, None, ())


def raw_tx(inputs: list[tuple[bytes, int, int]], outputs: list[tuple[int, bytes]], lock_time: int) -> bytes:
    """Any transaction: inputs as (txid, index, sequence), outputs as (value, script)."""
    return serialize(
        make_transaction(
            [tx_input(t, i, seq) for t, i, seq in inputs], [tx_output(v, s) for v, s in outputs], lock_time
        )
    )


# -- signatures --------------------------------------------------------------------------------


def high_s(signature: bytes) -> bytes:
    """The same signature with S := n - S: still valid ECDSA, but high S (§4.2, §13 item 3)."""
    parsed = der.parse_signature(signature)
    assert parsed.is_low_s()
    return der.TxSignature(parsed.r, der.SECP256K1_ORDER - parsed.s, parsed.sighash).to_bytes()


def retag(signature: bytes, sighash: int) -> bytes:
    """The same DER signature with another sighash byte (so the digest no longer matches)."""
    return signature[:-1] + bytes((sighash,))


#: DER-looking, but the sequence length (7) does not match the 6 bytes that follow.
GARBAGE_SIGNATURE = bytes.fromhex("30 07 02 01 01 02 01 01 83")


def payment_signature(
    channel: ChannelScript,
    contract_txid: bytes,
    client_change: int,
    signer: Any = CLIENT_KEY,
    sighash: Optional[int] = None,
) -> bytes:
    """A payment signature over the digest for ``client_change``, with the right flags unless
    ``sighash`` is given (the digest then commits to that sighash byte, as a wrong-flags
    signer would)."""
    if sighash is None:
        return payment.sign_payment(signer, channel, contract_txid, client_change)
    tx = payment.build_payment(channel, contract_txid, client_change)
    from twisted_paychan.bitcoin.sighash import signature_hash

    return sign(signer, signature_hash(tx, 0, channel.script_code, sighash), sighash)


#: Every way a payment signature can fail §7.3 checks 1, 6 and 7, as
#: ``name -> f(channel, txid, c) -> signature for c``.
def _bad_payment_signatures() -> dict[str, Any]:
    def good(ch: ChannelScript, t: bytes, c: int) -> bytes:
        return payment_signature(ch, t, c)

    return {
        "not-der": lambda ch, t, c: GARBAGE_SIGNATURE,
        "empty": lambda ch, t, c: b"",
        "undefined-sighash-0x04": lambda ch, t, c: retag(good(ch, t, c), 0x04),
        "undefined-sighash-0x00": lambda ch, t, c: retag(good(ch, t, c), 0x00),
        "high-s": lambda ch, t, c: high_s(good(ch, t, c)),
        "flags-all-0x01": lambda ch, t, c: payment_signature(ch, t, c, sighash=0x01),
        "flags-swapped": lambda ch, t, c: payment_signature(
            ch, t, c, sighash=0x82 if payment_sighash_type(c) == 0x83 else 0x83
        ),
        "wrong-key": lambda ch, t, c: payment_signature(ch, t, c, signer=STRANGER),
        "signed-for-other-change": lambda ch, t, c: payment_signature(ch, t, c + 1000 if c else 1000),
        "signed-for-other-contract": lambda ch, t, c: payment_signature(ch, bytes(reversed(t)), c),
    }


BAD_PAYMENT_SIGNATURES = _bad_payment_signatures()

def bare(message_type: int) -> m.TwoWayChannelMessage:
    """A message of ``message_type`` without its payload field (it still decodes: the payload
    fields are optional at the top level)."""
    return m.TwoWayChannelMessage(type=message_type)


# -- looking at effects ------------------------------------------------------------------------


def sent(effects: list) -> list:
    """The messages a list of effects writes to the peer, in order."""
    return [e.message for e in effects if isinstance(e, fx.Send)]


def sent_types(effects: list) -> list:
    return [msg.type for msg in sent(effects)]


def close_reasons(effects: list) -> list[CloseReason]:
    return [e.reason for e in effects if isinstance(e, fx.Close)]


def of_kind(effects: list, kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]


def assert_refused(effects: list, code: ErrorCode, reason: CloseReason) -> Any:
    """The peer hears exactly ``ERROR{code}`` and nothing else, and the connection closes for
    ``reason`` after it. Returns the ``Error`` body."""
    msgs = sent(effects)
    assert [msg.type for msg in msgs] == [MT.ERROR], f"expected one ERROR, sent {_names(msgs)}"
    body = msgs[0].error
    assert ErrorCode(body.code) is code, f"ERROR code {ErrorCode(body.code).name}, expected {code.name}"
    assert close_reasons(effects) == [reason]
    assert isinstance(effects[-1], fx.Close)
    return body


def assert_closed_quietly(effects: list, reason: CloseReason) -> None:
    """Nothing is sent, and the connection closes for ``reason``."""
    assert sent(effects) == [], f"expected nothing sent, sent {_names(sent(effects))}"
    assert close_reasons(effects) == [reason]


def assert_ignored(effects: list) -> None:
    assert effects == []


def _names(msgs: list) -> list[str]:
    return [m.type_name(msg.type) for msg in msgs]


# -- the server, step by step ------------------------------------------------------------------


@dataclass
class ServerSession:
    """A :class:`ServerMachine` and what its client would know, to craft the next message."""

    version: int
    machine: ServerMachine
    value: int = VALUE
    expiry: int = 0
    channel: Optional[ChannelScript] = None
    contract: bytes = b""
    contract_txid: bytes = b""
    #: c of the last payment the server accepted (V before any).
    client_change: int = VALUE

    def receive(self, message: Any, now: int = NOW) -> list:
        return self.machine.receive(received.decode(message), now)

    @property
    def step(self) -> ServerStep:
        return self.machine.step

    # messages a client would send

    def unsigned_refund(self, **overrides: Any) -> bytes:
        """The v1 refund as bitcoinj's client builds it, with ``overrides`` of
        ``inputs`` / ``outputs`` / ``lock_time``."""
        assert self.channel is not None
        good = parse_transaction(serialize(refund.build_refund(self.channel, self.contract_txid, self.value)))
        inputs = overrides.get(
            "inputs", [(bytes(i.prevout.hash), i.prevout.n, i.nSequence) for i in good.vin]
        )
        outputs = overrides.get("outputs", [(o.nValue, bytes(o.scriptPubKey)) for o in good.vout])
        return raw_tx(inputs, outputs, overrides.get("lock_time", good.nLockTime))

    def provide_refund(self, tx: Optional[bytes] = None, key: bytes = CLIENT_KEY.public_key) -> Any:
        return m.provide_refund(key, self.unsigned_refund() if tx is None else tx)

    def payment(self, client_change: int, signature: Optional[bytes] = None, info: Optional[bytes] = None) -> Any:
        assert self.channel is not None
        if signature is None:
            signature = payment_signature(self.channel, self.contract_txid, client_change)
        return m.payment(client_change, signature, info)

    def update(self, client_change: int, signature: Optional[bytes] = None, info: Optional[bytes] = None) -> Any:
        msg = m.TwoWayChannelMessage(type=MT.UPDATE_PAYMENT)
        msg.update_payment.CopyFrom(self.payment(client_change, signature, info))
        return msg

    def provide_contract(
        self,
        tx: Optional[bytes] = None,
        initial: Any = None,
        client_key: Optional[bytes] = None,
    ) -> Any:
        """PROVIDE_CONTRACT; for v2 ``client_key`` defaults to K_C (pass b"-" to leave it out)."""
        if initial is None:
            initial = self.payment(self.value - MIN_PAYMENT)
        if client_key is None and self.version == 2:
            client_key = CLIENT_KEY.public_key
        elif client_key == b"-":
            client_key = None
        return m.provide_contract(self.contract if tx is None else tx, initial, client_key)


def server_fresh(version: int, settings: Optional[ServerSettings] = None) -> ServerSession:
    """WAITING_ON_CLIENT_VERSION."""
    return ServerSession(version, ServerMachine(settings or ServerSettings(fee_rate=1000)))


def server_initiated(version: int, settings: Optional[ServerSettings] = None, value: int = VALUE) -> ServerSession:
    """INITIATE sent: v1 WAITING_ON_UNSIGNED_REFUND, v2 WAITING_ON_CONTRACT."""
    s = server_fresh(version, settings)
    s.value = value
    out = s.receive(m.client_version(version))
    assert sent_types(out) == [MT.SERVER_VERSION] and of_kind(out, fx.NewServerKey)
    out = s.machine.server_key_ready(SERVER_KEY)
    [initiate] = sent(out)
    assert initiate.type == MT.INITIATE
    s.expiry = initiate.initiate.expire_time_secs
    s.channel = ChannelScript(version, CLIENT_KEY.public_key, SERVER_KEY.public_key, s.expiry)
    s.contract = contract_tx([(value, s.channel.script_pubkey)])
    s.contract_txid = txid_of(s.contract)
    return s


def server_waiting_on_contract(version: int, **kwargs: Any) -> ServerSession:
    """WAITING_ON_CONTRACT (v1: after RETURN_REFUND)."""
    s = server_initiated(version, **kwargs)
    if version == 1:
        out = s.receive(s.provide_refund())
        assert sent_types(out) == [MT.RETURN_REFUND], out
    assert s.step is ServerStep.WAITING_ON_CONTRACT
    return s


def server_broadcasting(version: int, initial_change: Optional[int] = None, **kwargs: Any) -> ServerSession:
    """WAITING_ON_MULTISIG_ACCEPTANCE: the contract checked, its broadcast outstanding."""
    s = server_waiting_on_contract(version, **kwargs)
    c0 = s.value - MIN_PAYMENT if initial_change is None else initial_change
    out = s.receive(s.provide_contract(initial=s.payment(c0)))
    assert [type(e) for e in out] == [fx.StoreServerChannel], out  # stored before it goes out
    out = s.machine.channel_stored()
    assert [type(e) for e in out] == [fx.BroadcastContract], out
    s.client_change = c0
    return s


def server_open(version: int, **kwargs: Any) -> ServerSession:
    """CHANNEL_OPEN sent, after the initial payment of P."""
    s = server_broadcasting(version, **kwargs)
    out = s.machine.contract_accepted(NOW)
    assert sent_types(out) == [MT.CHANNEL_OPEN], out
    assert s.step is ServerStep.CHANNEL_OPEN
    return s


def server_settling(version: int) -> ServerSession:
    """SETTLING after the client's CLOSE; the settlement is outstanding."""
    s = server_open(version)
    out = s.receive(m.close())
    assert [type(e) for e in out] == [fx.SettleChannel]
    return s


def server_storing_payment(version: int) -> ServerSession:
    """STORING_PAYMENT: a payment of 1000 more is being stored."""
    s = server_open(version)
    out = s.receive(s.update(s.client_change - 1000))
    assert [type(e) for e in out] == [fx.StorePayment]
    s.client_change -= 1000
    return s


def server_waiting_on_application(version: int) -> ServerSession:
    """WAITING_ON_APPLICATION: the stored payment's ack is up to the application."""
    s = server_storing_payment(version)
    out = s.machine.payment_stored()
    assert [type(e) for e in out] == [fx.NotifyPayment]
    return s


# -- the client, step by step ------------------------------------------------------------------


@dataclass
class ClientSession:
    """A :class:`ClientMachine` and what its server would know, to craft the next message."""

    version: int
    machine: ClientMachine
    settings: ClientSettings
    expiry: int = CLIENT_EXPIRY
    channel: Optional[ChannelScript] = None
    contract: Optional[FundedTransaction] = None
    unsigned_refund: bytes = b""
    #: The last payment signature the client sent, and its c.
    signature: bytes = b""
    client_change: int = 0

    def receive(self, message: Any, now: int = NOW) -> list:
        return self.machine.receive(received.decode(message), now)

    @property
    def step(self) -> ClientStep:
        return self.machine.step

    def refund_signature(self, signer: Any = SERVER_KEY, tx: Optional[bytes] = None) -> bytes:
        """The server's 0x82 refund signature over the client's unsigned refund (or ``tx``)."""
        assert self.channel is not None
        refund_tx = parse_transaction(self.unsigned_refund if tx is None else tx)
        return refund.server_refund_signature(signer, refund_tx, self.channel)

    def settlement(self, payout_to: bytes = STRANGER.public_key) -> bytes:
        """The settlement a server would broadcast for the client's last payment."""
        from twisted_paychan.bitcoin.settlement import build_settlement

        assert self.channel is not None and self.contract is not None
        return build_settlement(
            self.channel, self.contract.txid, self.settings.channel_value, self.client_change,
            self.signature, SERVER_KEY, p2pkh_script(payout_to), 1000,
        ).raw


def initiate(
    expiry: int = CLIENT_EXPIRY,
    min_channel_size: int = MIN_CHANNEL_SIZE,
    min_payment: int = MIN_PAYMENT,
    key: bytes = SERVER_KEY.public_key,
) -> Any:
    """INITIATE; unlike ``m.initiate`` it takes any uint64 and any key bytes."""
    msg = m.TwoWayChannelMessage(type=MT.INITIATE)
    msg.initiate.multisig_key = key
    msg.initiate.min_accepted_channel_size = min_channel_size
    msg.initiate.expire_time_secs = expiry
    msg.initiate.min_payment = min_payment
    return msg


def client_fresh(
    version: int,
    settings: Optional[ClientSettings] = None,
    resume: Any = None,
    selector: Optional[VersionSelector] = None,
) -> ClientSession:
    """WAITING_FOR_VERSION_NEGOTIATION: CLIENT_VERSION sent."""
    if settings is None:
        settings = ClientSettings(channel_value=VALUE, versions=selector or SELECTOR[version], fee_rate=1000)
    s = ClientSession(version, ClientMachine(settings, SERVER_ID, CLIENT_KEY, resume), settings)
    out = s.machine.start()
    assert sent_types(out) == [MT.CLIENT_VERSION]
    return s


def client_waiting_for_initiate(version: int, **kwargs: Any) -> ClientSession:
    s = client_fresh(version, **kwargs)
    assert s.receive(m.server_version(version)) == []
    assert s.step is ClientStep.WAITING_FOR_INITIATE
    return s


def client_funding(version: int, **kwargs: Any) -> ClientSession:
    """FUNDING_CONTRACT: INITIATE accepted, the wallet is funding the contract."""
    s = client_waiting_for_initiate(version, **kwargs)
    out = s.receive(initiate(s.expiry))
    [fund] = of_kind(out, fx.FundContract)
    s.channel = ChannelScript(version, CLIENT_KEY.public_key, SERVER_KEY.public_key, s.expiry)
    assert fund.script_pubkey == s.channel.script_pubkey and fund.value == s.settings.channel_value
    s.contract = funded(fund.script_pubkey, fund.value)
    return s


def client_waiting_for_refund(**kwargs: Any) -> ClientSession:
    """v1 WAITING_FOR_REFUND_RETURN: PROVIDE_REFUND sent."""
    s = client_funding(1, **kwargs)
    out = s.machine.contract_funded(s.contract, NOW)
    [provide_refund] = sent(out)
    assert provide_refund.type == MT.PROVIDE_REFUND
    s.unsigned_refund = bytes(provide_refund.provide_refund.tx)
    return s


def client_storing(version: int, **kwargs: Any) -> ClientSession:
    """STORING_CHANNEL: the record with the signed refund is being stored."""
    if version == 1:
        s = client_waiting_for_refund(**kwargs)
        out = s.receive(m.return_refund(s.refund_signature()))
    else:
        s = client_funding(2, **kwargs)
        out = s.machine.contract_funded(s.contract, NOW)
    assert [type(e) for e in out] == [fx.StoreClientChannel], out
    return s


def client_waiting_for_open(version: int, **kwargs: Any) -> ClientSession:
    """WAITING_FOR_CHANNEL_OPEN: PROVIDE_CONTRACT sent."""
    s = client_storing(version, **kwargs)
    [contract] = sent(s.machine.channel_stored())
    assert contract.type == MT.PROVIDE_CONTRACT
    s.signature = bytes(contract.provide_contract.initial_payment.signature)
    s.client_change = contract.provide_contract.initial_payment.client_change_value
    return s


def client_open(version: int, **kwargs: Any) -> ClientSession:
    s = client_waiting_for_open(version, **kwargs)
    out = s.receive(m.channel_open())
    assert of_kind(out, fx.ChannelOpened) and s.step is ClientStep.CHANNEL_OPEN
    return s


def client_paying(version: int, amount: int = 1000, **kwargs: Any) -> ClientSession:
    """CHANNEL_OPEN with a payment of ``amount`` sent and not yet acknowledged."""
    s = client_open(version, **kwargs)
    assert [type(e) for e in s.machine.pay(amount, None, NOW)] == [fx.StoreClientChange]
    [update] = sent(s.machine.change_stored())
    s.signature = bytes(update.update_payment.signature)
    s.client_change = update.update_payment.client_change_value
    return s


def client_closing(version: int) -> ClientSession:
    """WAITING_FOR_CHANNEL_CLOSE: the client asked the server to settle."""
    s = client_open(version)
    assert sent_types(s.machine.settle()) == [MT.CLOSE]
    return s


# -- below the machines: the framing -----------------------------------------------------------


#: Frames that are not a message (§1.2, §1.3), each followed in the same read by a good one.
BAD_FRAMES = {
    "oversize": (32768).to_bytes(4, "big") + b"\x00" * 16,
    "negative-length": b"\x80\x00\x00\x00",
    "unparsable": b"\x00\x00\x00\x04\xff\xff\xff\xff",
    "unknown-type-99": b"\x00\x00\x00\x02\x08\x63",
    "update-payment-missing-signature": b"\x00\x00\x00\x06\x08\x08\x42\x02\x08\x01",
    "server-version-missing-major": b"\x00\x00\x00\x04\x08\x02\x1a\x00",
}


class FramedMachine(MessageProtocol):
    """The framing in front of a machine, as the TCP adapters put it."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.effects: list = []

    def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
        self.effects += self.session.receive(msg)


def assert_frame_stops_at_the_framing(session: Any, frame: bytes, follow_up: Any) -> None:
    """``frame`` (then a good ``follow_up``) never reaches the machine: the framing closes the
    connection after writing ERROR{SYNTAX_ERROR} (allowed by §1.3 [Recommended])."""
    feed, transport = FramedMachine(session), StringTransport()
    feed.makeConnection(transport)
    step = session.step
    feed.dataReceived(frame + encode_frame(follow_up))
    assert feed.effects == [] and session.step is step
    assert transport.value() == encode_frame(m.error(m.ErrorCode.SYNTAX_ERROR))
    assert transport.disconnecting
    assert feed.closeReason is not None and feed.closeReason.kind is CloseKind.PROTOCOL_VIOLATION
