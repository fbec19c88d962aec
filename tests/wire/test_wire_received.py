"""
Received messages as typed values (``wire.received``): every message type decodes to its frozen
dataclass with its fields, optional fields absent read as None, and every required field that
is missing (or a payload the type names but does not carry) decodes to ``Malformed``, which the
machines answer with ``ERROR{SYNTAX_ERROR}`` (PROTOCOL.md §1.3, §2.4, Appendix A).
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from twisted_paychan.wire import messages as m
from twisted_paychan.wire import received as r

MT = m.MessageType

TXID = bytes(range(32))


@pytest.mark.parametrize(
    "message, expected",
    [
        (m.client_version(2), r.ClientVersion(2, 0, 86340, None)),
        (m.client_version(1, 3600, TXID, minor=1), r.ClientVersion(1, 1, 3600, TXID)),
        (m.server_version(2), r.ServerVersion(2, 0)),
        (m.initiate(b"\x02" * 33, 100_000, 1_700_000_000, 1000), r.Initiate(b"\x02" * 33, 100_000, 1_700_000_000, 1000)),
        (m.provide_refund(b"\x03" * 33, b"refund"), r.ProvideRefund(b"\x03" * 33, b"refund")),
        (m.return_refund(b"\x30\x82"), r.ReturnRefund(b"\x30\x82")),
        (
            m.provide_contract(b"contract", m.payment(5, b"\x30", b"hi"), b"\x02" * 33),
            r.ProvideContract(b"contract", r.UpdatePayment(5, b"\x30", b"hi"), b"\x02" * 33),
        ),
        (
            m.provide_contract(b"contract", m.payment(5, b"\x30")),
            r.ProvideContract(b"contract", r.UpdatePayment(5, b"\x30", None), None),
        ),
        (m.channel_open(), r.ChannelOpen()),
        (m.update_payment(0, b"\x30\x82"), r.UpdatePayment(0, b"\x30\x82", None)),
        (m.update_payment(7, b"\x30", b""), r.UpdatePayment(7, b"\x30", b"")),
        (m.payment_ack(), r.PaymentAck(None)),
        (m.payment_ack(b""), r.PaymentAck(b"")),
        (m.payment_ack(b"info"), r.PaymentAck(b"info")),
        (m.close(), r.Close(None)),
        (m.close(b"settlement"), r.Close(b"settlement")),
        (m.error(m.ErrorCode.BAD_TRANSACTION, "no", 5), r.Error(m.ErrorCode.BAD_TRANSACTION, "no", 5)),
        (m.TwoWayChannelMessage(type=MT.ERROR, error=m.Error()), r.Error(m.ErrorCode.OTHER, "", None)),
    ],
)
def test_each_message_decodes_to_its_dataclass(message: m.TwoWayChannelMessage, expected: object) -> None:
    # Through bytes, as from the network, and as an application hands it in (level 2).
    via_bytes = r.decode(m.decode_message(m.encode_message(message)))
    assert via_bytes == expected and type(via_bytes) is type(expected)
    assert r.decode(message) == expected


def test_every_message_type_has_a_dataclass_of_its_name() -> None:
    decoded = {cls.NAME for cls in typing.get_args(r.ReceivedMessage) if cls is not r.Malformed}
    assert decoded == set(MT.keys())


def test_the_dataclasses_are_frozen() -> None:
    payment = r.decode(m.update_payment(5, b"\x30"))
    assert isinstance(payment, r.UpdatePayment)
    with pytest.raises(dataclasses.FrozenInstanceError):
        payment.client_change_value = 0  # type: ignore[misc]
    assert dataclasses.is_dataclass(payment) and hash(payment) == hash(r.UpdatePayment(5, b"\x30", None))


# -- missing payloads and required fields ------------------------------------------------------

#: The payload field each type requires (CLOSE's and PAYMENT_ACK's are optional; CHANNEL_OPEN has none).
REQUIRED_PAYLOAD = {
    MT.CLIENT_VERSION: "client_version",
    MT.SERVER_VERSION: "server_version",
    MT.INITIATE: "initiate",
    MT.PROVIDE_REFUND: "provide_refund",
    MT.RETURN_REFUND: "return_refund",
    MT.PROVIDE_CONTRACT: "provide_contract",
    MT.UPDATE_PAYMENT: "update_payment",
    MT.ERROR: "error",
}


@pytest.mark.parametrize("message_type", sorted(REQUIRED_PAYLOAD), ids=m.type_name)
def test_a_type_without_its_payload_is_malformed(message_type: int) -> None:
    decoded = r.decode(m.TwoWayChannelMessage(type=message_type))
    assert isinstance(decoded, r.Malformed)
    assert decoded.type_name == m.type_name(message_type)
    assert REQUIRED_PAYLOAD[message_type] in decoded.explanation


@pytest.mark.parametrize("message_type", [MT.CHANNEL_OPEN, MT.CLOSE, MT.PAYMENT_ACK], ids=m.type_name)
def test_types_whose_payload_is_optional_decode_without_it(message_type: int) -> None:
    assert not isinstance(r.decode(m.TwoWayChannelMessage(type=message_type)), r.Malformed)


def test_a_message_without_a_type_is_malformed() -> None:
    assert isinstance(r.decode(m.TwoWayChannelMessage()), r.Malformed)
    # Not even a client_version body makes it a CLIENT_VERSION (an unset type reads as 1).
    assert isinstance(r.decode(m.TwoWayChannelMessage(client_version=m.ClientVersion(major=2))), r.Malformed)


def _without(message: m.TwoWayChannelMessage, path: str) -> m.TwoWayChannelMessage:
    """``message`` with the field at dotted ``path`` cleared."""
    *parents, name = path.split(".")
    body = message
    for p in parents:
        body = getattr(body, p)
    body.ClearField(name)  # type: ignore[arg-type]
    return message


#: Every required field of every payload (§2.4), as (message builder, dotted path).
REQUIRED_FIELDS = [
    (lambda: m.client_version(2), "client_version.major"),
    (lambda: m.server_version(2), "server_version.major"),
    *[(lambda: m.initiate(b"\x02", 1, 2, 3), f"initiate.{f}")
      for f in ("multisig_key", "min_accepted_channel_size", "expire_time_secs", "min_payment")],
    *[(lambda: m.provide_refund(b"\x02", b"tx"), f"provide_refund.{f}") for f in ("multisig_key", "tx")],
    (lambda: m.return_refund(b"\x30"), "return_refund.signature"),
    *[(lambda: m.provide_contract(b"tx", m.payment(1, b"\x30"), b"\x02"), f"provide_contract.{f}")
      for f in ("tx", "initial_payment", "initial_payment.client_change_value", "initial_payment.signature")],
    *[(lambda: m.update_payment(1, b"\x30"), f"update_payment.{f}") for f in ("client_change_value", "signature")],
    (lambda: m.close(b"settlement"), "settlement.tx"),
]


@pytest.mark.parametrize("build, path", REQUIRED_FIELDS, ids=[p for _, p in REQUIRED_FIELDS])
def test_each_missing_required_field_is_malformed(build: typing.Callable[[], m.TwoWayChannelMessage], path: str) -> None:
    message = _without(build(), path)
    decoded = r.decode(message)
    assert isinstance(decoded, r.Malformed), decoded
    assert decoded.type_name == m.type_name(message.type)
    assert path.rsplit(".", 1)[-1] in decoded.explanation
    # The bytes path refuses the same message outright (§1.3), when it keeps the payload at all.
    if "." in path:
        with pytest.raises(m.MessageEncodeError):
            m.encode_message(message)
