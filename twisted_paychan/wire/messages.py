"""
Channel messages as values: decoding, encoding and one constructor per message (PROTOCOL.md §2).

This is the only module that parses or serializes the generated protobuf classes, for two
reasons:

* proto2 marks fields ``required``, but the Python protobuf runtime does not enforce that on
  parse (shared notes DEPENDENCIES.md §5): a frame with a missing ``type``, an unknown
  ``MessageType`` number (kept as an unknown field, so ``type`` stays unset) or a sub-message
  without a required field parses "successfully". bitcoinj rejects all of these (§1.3), and so
  does :func:`decode_message`, by checking ``IsInitialized()`` after every parse.
* Wire compatibility is byte for byte. bitcoinj writes some fields even when they hold their
  default (``ClientVersion.minor`` and ``time_window_secs``, ``ServerVersion.minor``) and leaves
  others out (no ``payment_ack`` sub-message when there is no info). The constructors below
  encode those choices once, so the channel code cannot get them wrong.

Other packages import the message classes and enums from here, never from protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeAlias

from google.protobuf.message import DecodeError, EncodeError

from twisted_paychan.constants import DEFAULT_CLIENT_TIME_WINDOW, MAX_MESSAGE_SIZE
from twisted_paychan.wire.paymentchannel_pb2 import (
    ClientVersion,
    Error,
    Initiate,
    PaymentAck,
    ProvideContract,
    ProvideRefund,
    ReturnRefund,
    ServerVersion,
    Settlement,
    TwoWayChannelMessage,
    UpdatePayment,
)

__all__ = [
    "ClientVersion",
    "Error",
    "ErrorCode",
    "ErrorCodeValue",
    "Initiate",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLargeError",
    "MT",
    "MessageType",
    "PAYLOAD_FIELD",
    "PaymentAck",
    "ProvideContract",
    "ProvideRefund",
    "ReturnRefund",
    "SENT_BY_CLIENT",
    "SENT_BY_SERVER",
    "ServerVersion",
    "Settlement",
    "TwoWayChannelMessage",
    "UpdatePayment",
    "WireError",
    "channel_open",
    "client_version",
    "close",
    "decode_message",
    "encode_message",
    "error",
    "initiate",
    "payment",
    "payment_ack",
    "provide_contract",
    "provide_refund",
    "return_refund",
    "server_version",
    "type_name",
    "update_payment",
]

#: The enum of message types (``MessageType.UPDATE_PAYMENT`` ...), nested in the top message.
MessageType = TwoWayChannelMessage.MessageType
#: The enum of error codes (``ErrorCode.SYNTAX_ERROR`` ...), nested in ``Error``.
ErrorCode = Error.ErrorCode
#: The static type of one ErrorCode value, for annotations.
ErrorCodeValue: TypeAlias = "Error.ErrorCode.ValueType"



class MT:
    """The ``MessageType`` numbers as plain class attributes, for code that runs per message.

    ``MessageType.CLOSE`` is a lookup through protobuf's ``EnumTypeWrapper.__getattr__``, close
    to a microsecond each, and a payment reads several; these cost a class attribute lookup.
    """

    CLIENT_VERSION: Final = MessageType.CLIENT_VERSION
    SERVER_VERSION: Final = MessageType.SERVER_VERSION
    INITIATE: Final = MessageType.INITIATE
    PROVIDE_REFUND: Final = MessageType.PROVIDE_REFUND
    RETURN_REFUND: Final = MessageType.RETURN_REFUND
    PROVIDE_CONTRACT: Final = MessageType.PROVIDE_CONTRACT
    CHANNEL_OPEN: Final = MessageType.CHANNEL_OPEN
    UPDATE_PAYMENT: Final = MessageType.UPDATE_PAYMENT
    CLOSE: Final = MessageType.CLOSE
    ERROR: Final = MessageType.ERROR
    PAYMENT_ACK: Final = MessageType.PAYMENT_ACK


#: Length of a contract txid, as ClientVersion.previous_channel_contract_hash carries it.
_CONTRACT_HASH_LENGTH: Final = 32


class WireError(Exception):
    """Base of the wire layer's own errors."""


class MessageDecodeError(WireError):
    """
    A frame's payload is not a valid ``TwoWayChannelMessage``: malformed protobuf, or a required
    field missing (at the top or in any sub-message present), which includes an unknown
    ``MessageType`` number. This is the peer's fault; bitcoinj drops the connection (§1.3).
    """


class MessageEncodeError(WireError, ValueError):
    """We tried to send a message that is not complete (a required field is unset): our bug."""


class MessageTooLargeError(MessageEncodeError):
    """We tried to send a message over the 32767-byte limit; bitcoinj would reject it (§1.2)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")
        self.size = size


# -- Directions and payloads (§2.3) --------------------------------------------------------------

#: Message types a client may send (and so a server may receive).
SENT_BY_CLIENT: Final[frozenset[int]] = frozenset(
    {
        MessageType.CLIENT_VERSION,
        MessageType.PROVIDE_REFUND,
        MessageType.PROVIDE_CONTRACT,
        MessageType.UPDATE_PAYMENT,
        MessageType.CLOSE,
        MessageType.ERROR,
    }
)
#: Message types a server may send (and so a client may receive).
SENT_BY_SERVER: Final[frozenset[int]] = frozenset(
    {
        MessageType.SERVER_VERSION,
        MessageType.INITIATE,
        MessageType.RETURN_REFUND,
        MessageType.CHANNEL_OPEN,
        MessageType.CLOSE,
        MessageType.ERROR,
        MessageType.PAYMENT_ACK,
    }
)
#: The sub-message field each type carries; None for CHANNEL_OPEN. The CLOSE and PAYMENT_ACK
#: fields are optional (present only with a settlement / with info); the others are expected.
PAYLOAD_FIELD: Final[Mapping[int, str | None]] = {
    MessageType.CLIENT_VERSION: "client_version",
    MessageType.SERVER_VERSION: "server_version",
    MessageType.INITIATE: "initiate",
    MessageType.PROVIDE_REFUND: "provide_refund",
    MessageType.RETURN_REFUND: "return_refund",
    MessageType.PROVIDE_CONTRACT: "provide_contract",
    MessageType.CHANNEL_OPEN: None,
    MessageType.UPDATE_PAYMENT: "update_payment",
    MessageType.CLOSE: "settlement",
    MessageType.ERROR: "error",
    MessageType.PAYMENT_ACK: "payment_ack",
}


def type_name(message_type: int) -> str:
    """The protocol's name for a MessageType number (``"UPDATE_PAYMENT"``), for logs."""
    try:
        return MessageType.Name(message_type)  # type: ignore[arg-type]
    except ValueError:
        return f"unknown({message_type})"


# -- Bytes <-> message ---------------------------------------------------------------------------


def decode_message(payload: bytes) -> TwoWayChannelMessage:
    """
    Parse one frame's payload (without its length prefix).

    Raises :class:`MessageDecodeError` for malformed protobuf and for any missing required field,
    nested ones included. Unknown fields are kept, so a decoded message re-encodes to the same
    bytes; an unknown ``Error.ErrorCode`` number therefore reads as the default ``OTHER``.
    """
    msg = TwoWayChannelMessage()
    try:
        msg.ParseFromString(payload)
    except DecodeError as e:
        raise MessageDecodeError(f"malformed message: {e}") from None
    if not msg.IsInitialized():
        # FindInitializationErrors is real runtime API that the typeshed stubs lack.
        missing = ", ".join(msg.FindInitializationErrors()) or "?"  # type: ignore[attr-defined]
        raise MessageDecodeError(f"missing required field(s): {missing}")
    return msg


def encode_message(msg: TwoWayChannelMessage) -> bytes:
    """
    Serialize a message to a frame payload (without the length prefix), as bitcoinj would: known
    fields in field-number order.

    Raises :class:`MessageEncodeError` if a required field is unset and
    :class:`MessageTooLargeError` if the result exceeds ``MAX_MESSAGE_SIZE``.
    """
    try:
        payload = msg.SerializeToString()
    except EncodeError as e:
        raise MessageEncodeError(str(e)) from None
    if len(payload) > MAX_MESSAGE_SIZE:
        raise MessageTooLargeError(len(payload))
    return payload


# -- Constructors, one per message (§2.1 examples are the byte-level reference) ------------------


def client_version(
    major: int,
    time_window_secs: int = DEFAULT_CLIENT_TIME_WINDOW,
    previous_contract_hash: bytes | None = None,
    minor: int = 0,
) -> TwoWayChannelMessage:
    """
    CLIENT_VERSION. ``minor`` and ``time_window_secs`` are always written, as bitcoinj does
    (major 2 with the defaults: ``08 01 12 08 08 02 10 00 20 c4 a2 05``).
    ``previous_contract_hash`` (32 bytes, display order) asks to resume that channel.
    """
    msg = TwoWayChannelMessage(type=MT.CLIENT_VERSION)
    body = msg.client_version
    body.major = major
    body.minor = minor
    if previous_contract_hash is not None:
        if len(previous_contract_hash) != _CONTRACT_HASH_LENGTH:
            raise ValueError(
                f"previous_contract_hash must be {_CONTRACT_HASH_LENGTH} bytes, "
                f"not {len(previous_contract_hash)}"
            )
        body.previous_channel_contract_hash = previous_contract_hash
    body.time_window_secs = time_window_secs
    return msg


def server_version(major: int, minor: int = 0) -> TwoWayChannelMessage:
    """SERVER_VERSION, ``minor`` always written (``08 02 1a 04 08 02 10 00`` for major 2)."""
    msg = TwoWayChannelMessage(type=MT.SERVER_VERSION)
    msg.server_version.major = major
    msg.server_version.minor = minor
    return msg


def initiate(
    multisig_key: bytes, min_accepted_channel_size: int, expire_time_secs: int, min_payment: int
) -> TwoWayChannelMessage:
    """INITIATE: the server's key ``K_S``, smallest channel value, expiry ``E`` and ``P``."""
    msg = TwoWayChannelMessage(type=MT.INITIATE)
    body = msg.initiate
    body.multisig_key = multisig_key
    body.min_accepted_channel_size = min_accepted_channel_size
    body.expire_time_secs = expire_time_secs
    body.min_payment = min_payment
    return msg


def provide_refund(multisig_key: bytes, tx: bytes) -> TwoWayChannelMessage:
    """PROVIDE_REFUND (v1): the client's key ``K_C`` and the unsigned refund transaction."""
    msg = TwoWayChannelMessage(type=MT.PROVIDE_REFUND)
    msg.provide_refund.multisig_key = multisig_key
    msg.provide_refund.tx = tx
    return msg


def return_refund(signature: bytes) -> TwoWayChannelMessage:
    """RETURN_REFUND (v1): the server's refund signature (DER plus sighash byte)."""
    msg = TwoWayChannelMessage(type=MT.RETURN_REFUND)
    msg.return_refund.signature = signature
    return msg


def payment(client_change_value: int, signature: bytes, info: bytes | None = None) -> UpdatePayment:
    """The ``UpdatePayment`` body, for UPDATE_PAYMENT and PROVIDE_CONTRACT's initial payment."""
    return _fill_payment(UpdatePayment(), client_change_value, signature, info)


def _fill_payment(
    body: UpdatePayment, client_change_value: int, signature: bytes, info: bytes | None
) -> UpdatePayment:
    body.client_change_value = client_change_value
    body.signature = signature
    if info is not None:
        body.info = info
    return body


def provide_contract(
    tx: bytes, initial_payment: UpdatePayment, client_key: bytes | None = None
) -> TwoWayChannelMessage:
    """
    PROVIDE_CONTRACT: the signed contract and the initial payment (build it with
    :func:`payment`). ``client_key`` (``K_C``) is required by v2 servers and not sent in v1.
    """
    msg = TwoWayChannelMessage(type=MT.PROVIDE_CONTRACT)
    body = msg.provide_contract
    body.tx = tx
    body.initial_payment.CopyFrom(initial_payment)
    if client_key is not None:
        body.client_key = client_key
    return msg


def update_payment(
    client_change_value: int, signature: bytes, info: bytes | None = None
) -> TwoWayChannelMessage:
    """UPDATE_PAYMENT: the new client change ``c`` and the signature; ``info`` is opaque data."""
    msg = TwoWayChannelMessage(type=MT.UPDATE_PAYMENT)
    # Filled in place rather than built apart and copied in: same bytes, a third of the time
    # (this runs once per payment).
    _fill_payment(msg.update_payment, client_change_value, signature, info)
    return msg


def payment_ack(info: bytes | None = None) -> TwoWayChannelMessage:
    """
    PAYMENT_ACK. Without info there is no ``payment_ack`` field at all (``08 0b``), like bitcoinj;
    ``info=b""`` is different: it writes an empty ``payment_ack.info``.
    """
    msg = TwoWayChannelMessage(type=MT.PAYMENT_ACK)
    if info is not None:
        msg.payment_ack.info = info
    return msg


def close(settlement_tx: bytes | None = None) -> TwoWayChannelMessage:
    """CLOSE, with the settlement transaction when the server settled (``08 09`` without)."""
    msg = TwoWayChannelMessage(type=MT.CLOSE)
    if settlement_tx is not None:
        msg.settlement.tx = settlement_tx
    return msg


def error(
    code: ErrorCodeValue, explanation: str | None = None, expected_value: int | None = None
) -> TwoWayChannelMessage:
    """
    ERROR. ``code`` is always written, as bitcoinj does; bitcoinj sets ``expected_value`` only
    with MIN_PAYMENT_TOO_LARGE.
    """
    msg = TwoWayChannelMessage(type=MT.ERROR)
    body = msg.error
    body.code = code
    if explanation is not None:
        body.explanation = explanation
    if expected_value is not None:
        body.expected_value = expected_value
    return msg


def channel_open() -> TwoWayChannelMessage:
    """CHANNEL_OPEN, which has no payload (``08 07``)."""
    return TwoWayChannelMessage(type=MT.CHANNEL_OPEN)
