"""
Received channel messages as typed values: one frozen dataclass per message type (PROTOCOL.md
§2.3, §2.4), decoded from a ``TwoWayChannelMessage`` by :func:`decode`.

The connection machines take these, never protobuf: a handler sees exactly the fields its
message type carries, with proto2's required fields known to be there and the optional ones as
``None`` when absent (protobuf would hand back a default that cannot be told from a real value).

Required fields are checked here because nothing before this point checks them for every
source. ``messages.decode_message`` rejects a frame whose present sub-messages lack one, but an
application embedding the channel objects (level 2) hands us protobuf it built itself, and
proto2 leaves the payload field itself optional at the top level: an ``UPDATE_PAYMENT`` without
``update_payment`` parses. Such a message decodes to :class:`Malformed`, not to an exception,
so that it keeps its place in the order of the wire: a machine busy with an effect queues it
like any other message, and answers it when its turn comes, ``ERROR{SYNTAX_ERROR}`` (the
specification's recommendation where bitcoinj drops the connection, §1.3, Appendix A).

Checks that depend on the channel (v2 needs ``client_key``, amounts above the money supply,
keys and signatures) belong to the machines and ``channel.validation``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Final, Optional, Union

from google.protobuf.message import Message

from twisted_paychan.wire.messages import MT, TwoWayChannelMessage
from twisted_paychan.wire.messages import UpdatePayment as _PbUpdatePayment

__all__ = [
    "ChannelOpen",
    "ClientVersion",
    "Close",
    "Error",
    "FromClient",
    "FromServer",
    "Initiate",
    "Malformed",
    "PaymentAck",
    "ProvideContract",
    "ProvideRefund",
    "ReceivedMessage",
    "ReturnRefund",
    "ServerVersion",
    "UpdatePayment",
    "decode",
]


# Slots: a payment decodes one UpdatePayment per UPDATE_PAYMENT, and slotted instances are
# smaller and quicker to build. ``NAME`` is the message type's name in the protocol, for logs
# and explanations.


@dataclass(frozen=True, slots=True)
class ClientVersion:
    """CLIENT_VERSION (C→S): the version asked for, the longest lock-up accepted, and, to resume,
    the contract txid in display order (any length as sent; the server decides what counts)."""

    NAME: ClassVar[str] = "CLIENT_VERSION"

    major: int
    minor: int
    time_window_secs: int
    previous_channel_contract_hash: Optional[bytes]


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """SERVER_VERSION (S→C): the version both sides will speak."""

    NAME: ClassVar[str] = "SERVER_VERSION"

    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class Initiate:
    """INITIATE (S→C): ``K_S``, the smallest channel, the expiry ``E`` and the initial payment ``P``."""

    NAME: ClassVar[str] = "INITIATE"

    multisig_key: bytes
    min_accepted_channel_size: int
    expire_time_secs: int
    min_payment: int


@dataclass(frozen=True, slots=True)
class ProvideRefund:
    """PROVIDE_REFUND (C→S, v1): ``K_C`` and the unsigned refund."""

    NAME: ClassVar[str] = "PROVIDE_REFUND"

    multisig_key: bytes
    tx: bytes


@dataclass(frozen=True, slots=True)
class ReturnRefund:
    """RETURN_REFUND (S→C, v1): the server's refund signature."""

    NAME: ClassVar[str] = "RETURN_REFUND"

    signature: bytes


@dataclass(frozen=True, slots=True)
class UpdatePayment:
    """UPDATE_PAYMENT (C→S), and the initial payment inside PROVIDE_CONTRACT: the new client
    change ``c``, the client's signature, and the application's opaque ``info``."""

    NAME: ClassVar[str] = "UPDATE_PAYMENT"

    client_change_value: int
    signature: bytes
    info: Optional[bytes]


@dataclass(frozen=True, slots=True)
class ProvideContract:
    """PROVIDE_CONTRACT (C→S): the signed contract, the initial payment and (v2) ``K_C``."""

    NAME: ClassVar[str] = "PROVIDE_CONTRACT"

    tx: bytes
    initial_payment: UpdatePayment
    client_key: Optional[bytes]


@dataclass(frozen=True, slots=True)
class ChannelOpen:
    """CHANNEL_OPEN (S→C), which carries nothing."""

    NAME: ClassVar[str] = "CHANNEL_OPEN"


@dataclass(frozen=True, slots=True)
class PaymentAck:
    """PAYMENT_ACK (S→C), with the server application's ``info`` when it gave any."""

    NAME: ClassVar[str] = "PAYMENT_ACK"

    info: Optional[bytes]


@dataclass(frozen=True, slots=True)
class Close:
    """CLOSE (both ways), with the settlement transaction when the server settled."""

    NAME: ClassVar[str] = "CLOSE"

    settlement_tx: Optional[bytes]


@dataclass(frozen=True, slots=True)
class Error:
    """ERROR (both ways). ``code`` is the wire number (an unknown one reads as OTHER, §1.3);
    ``explanation`` is empty when absent."""

    NAME: ClassVar[str] = "ERROR"

    code: int
    explanation: str
    expected_value: Optional[int]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message whose type names a payload it does not carry, or whose payload lacks a required
    field (or with no type at all). The machines answer it ``ERROR{SYNTAX_ERROR}`` in turn."""

    NAME: ClassVar[str] = "(malformed)"

    type_name: str
    explanation: str


#: What a server receives.
FromClient = Union[ClientVersion, ProvideRefund, ProvideContract, UpdatePayment, Close, Error]
#: What a client receives.
FromServer = Union[ServerVersion, Initiate, ReturnRefund, ChannelOpen, PaymentAck, Close, Error]
#: Everything :func:`decode` returns. Either side may receive any of these: a message meant for
#: the other direction is the peer's protocol violation, which the machine answers.
ReceivedMessage = Union[
    ClientVersion,
    ServerVersion,
    Initiate,
    ProvideRefund,
    ReturnRefund,
    ProvideContract,
    ChannelOpen,
    UpdatePayment,
    PaymentAck,
    Close,
    Error,
    Malformed,
]


def decode(message: TwoWayChannelMessage) -> ReceivedMessage:
    """The typed value of ``message``; :class:`Malformed` when a required field is missing."""
    return _DECODERS[message.type](message)


def _missing(type_name: str, field: str) -> Malformed:
    return Malformed(type_name, f"{type_name} without {field}")


def _incomplete(type_name: str, field: str, body: Message) -> Malformed:
    # FindInitializationErrors is real runtime API that the typeshed stubs lack.
    missing = ", ".join(f"{field}.{name}" for name in body.FindInitializationErrors())  # type: ignore[attr-defined]
    return Malformed(type_name, f"{type_name} without {missing or field + '.?'}")


def _client_version(message: TwoWayChannelMessage) -> ReceivedMessage:
    # An unset ``type`` reads as the enum's first value, CLIENT_VERSION: only this decoder needs
    # to tell the two apart, and no other message pays for the check.
    if not message.HasField("type"):
        return Malformed("(none)", "message without a type")
    if not message.HasField("client_version"):
        return _missing("CLIENT_VERSION", "client_version")
    b = message.client_version
    if not b.IsInitialized():
        return _incomplete("CLIENT_VERSION", "client_version", b)
    resume = b.previous_channel_contract_hash if b.HasField("previous_channel_contract_hash") else None
    return ClientVersion(b.major, b.minor, b.time_window_secs, resume)


def _server_version(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("server_version"):
        return _missing("SERVER_VERSION", "server_version")
    b = message.server_version
    if not b.IsInitialized():
        return _incomplete("SERVER_VERSION", "server_version", b)
    return ServerVersion(b.major, b.minor)


def _initiate(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("initiate"):
        return _missing("INITIATE", "initiate")
    b = message.initiate
    if not b.IsInitialized():
        return _incomplete("INITIATE", "initiate", b)
    return Initiate(b.multisig_key, b.min_accepted_channel_size, b.expire_time_secs, b.min_payment)


def _provide_refund(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("provide_refund"):
        return _missing("PROVIDE_REFUND", "provide_refund")
    b = message.provide_refund
    if not b.IsInitialized():
        return _incomplete("PROVIDE_REFUND", "provide_refund", b)
    return ProvideRefund(b.multisig_key, b.tx)


def _return_refund(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("return_refund"):
        return _missing("RETURN_REFUND", "return_refund")
    b = message.return_refund
    if not b.IsInitialized():
        return _incomplete("RETURN_REFUND", "return_refund", b)
    return ReturnRefund(b.signature)


def _payment(b: _PbUpdatePayment) -> UpdatePayment:
    # Once per payment: built field by field through the slots, which is what the frozen
    # dataclass's own __init__ does, in half the time (it looks up object.__setattr__ for each).
    payment = _new(UpdatePayment)
    _set_change(payment, b.client_change_value)
    _set_signature(payment, b.signature)
    _set_info(payment, b.info if b.HasField("info") else None)
    return payment


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The setter of slot ``name``, which a frozen dataclass's ``__setattr__`` does not guard."""
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


_new: Final = object.__new__
_set_change: Final = _slot_setter(UpdatePayment, "client_change_value")
_set_signature: Final = _slot_setter(UpdatePayment, "signature")
_set_info: Final = _slot_setter(UpdatePayment, "info")


def _provide_contract(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("provide_contract"):
        return _missing("PROVIDE_CONTRACT", "provide_contract")
    b = message.provide_contract
    if not b.IsInitialized():  # initial_payment's own fields included
        return _incomplete("PROVIDE_CONTRACT", "provide_contract", b)
    return ProvideContract(b.tx, _payment(b.initial_payment), b.client_key if b.HasField("client_key") else None)


def _channel_open(message: TwoWayChannelMessage) -> ReceivedMessage:
    return _CHANNEL_OPEN


_CHANNEL_OPEN: Final = ChannelOpen()


def _update_payment(message: TwoWayChannelMessage) -> ReceivedMessage:
    b = message.update_payment
    # One call for the payload and both its required fields: an absent payload reads as an
    # empty UpdatePayment, which is not initialized either.
    if not b.IsInitialized():
        if not message.HasField("update_payment"):
            return _missing("UPDATE_PAYMENT", "update_payment")
        return _incomplete("UPDATE_PAYMENT", "update_payment", b)
    # _payment, inlined: this runs once per payment.
    payment = _new(UpdatePayment)
    _set_change(payment, b.client_change_value)
    _set_signature(payment, b.signature)
    _set_info(payment, b.info if b.HasField("info") else None)
    return payment


def _close(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("settlement"):
        return Close(None)
    b = message.settlement
    if not b.IsInitialized():
        return _incomplete("CLOSE", "settlement", b)
    return Close(b.tx)


def _error(message: TwoWayChannelMessage) -> ReceivedMessage:
    if not message.HasField("error"):
        return _missing("ERROR", "error")
    b = message.error
    return Error(b.code, b.explanation, b.expected_value if b.HasField("expected_value") else None)


def _payment_ack(message: TwoWayChannelMessage) -> ReceivedMessage:
    if message.HasField("payment_ack") and message.payment_ack.HasField("info"):
        return PaymentAck(message.payment_ack.info)
    return _ACK_WITHOUT_INFO


_ACK_WITHOUT_INFO: Final = PaymentAck(None)


#: One decoder per MessageType number; protobuf refuses to set any other number.
_DECODERS: Final[dict[int, Callable[[TwoWayChannelMessage], ReceivedMessage]]] = {
    MT.CLIENT_VERSION: _client_version,
    MT.SERVER_VERSION: _server_version,
    MT.INITIATE: _initiate,
    MT.PROVIDE_REFUND: _provide_refund,
    MT.RETURN_REFUND: _return_refund,
    MT.PROVIDE_CONTRACT: _provide_contract,
    MT.CHANNEL_OPEN: _channel_open,
    MT.UPDATE_PAYMENT: _update_payment,
    MT.CLOSE: _close,
    MT.ERROR: _error,
    MT.PAYMENT_ACK: _payment_ack,
}
