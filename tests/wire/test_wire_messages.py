"""
Messages as bytes: the constructors give bitcoinj's exact bytes (PROTOCOL.md §2.1), decoding
enforces proto2's required fields (§1.3), and encoding refuses what bitcoinj would refuse (§1.2).
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_paychan.constants import MAX_MESSAGE_SIZE
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.messages import ErrorCode, MessageType

# -- constructors: bytes as the spec and the recordings show them --------------------------------


@pytest.mark.parametrize(
    "msg, hex_bytes",
    [
        (m.client_version(2), "08 01 12 08 08 02 10 00 20 c4 a2 05"),
        (m.client_version(1), "08 01 12 08 08 01 10 00 20 c4 a2 05"),
        (m.server_version(2), "08 02 1a 04 08 02 10 00"),
        (m.server_version(1), "08 02 1a 04 08 01 10 00"),
        (m.channel_open(), "08 07"),
        (m.payment_ack(), "08 0b"),
        (m.payment_ack(b"\xde\xad\xbe\xef"), "08 0b 5a 06 0a 04 de ad be ef"),
        (m.payment_ack(b""), "08 0b 5a 02 0a 00"),
        (m.close(), "08 09"),
        (m.close(b"\x01\x02"), "08 09 4a 04 1a 02 01 02"),
        (m.error(ErrorCode.SYNTAX_ERROR), "08 0a 52 02 08 02"),
        (m.error(ErrorCode.OTHER), "08 0a 52 02 08 08"),
        (
            m.error(ErrorCode.MIN_PAYMENT_TOO_LARGE, "too much", 1000),
            "08 0a 52 0f 08 07 12 08" + b"too much".hex() + "18 e8 07",
        ),
        (m.update_payment(0, b"\x30\x82"), "08 08 42 06 08 00 12 02 30 82"),
        (m.update_payment(1, b"\x30", b"\x01"), "08 08 42 08 08 01 12 01 30 1a 01 01"),
        (m.return_refund(b"\x30\x82"), "08 05 32 04 0a 02 30 82"),
        (m.provide_refund(b"\x02", b"\x01"), "08 04 2a 06 0a 01 02 12 01 01"),
        (m.initiate(b"\x03", 100000, 1, 1000), "08 03 22 0c 0a 01 03 10 a0 8d 06 18 01 20 e8 07"),
        (
            m.provide_contract(b"\x01", m.payment(5, b"\x30"), b"\x02"),
            "08 06 3a 0d 0a 01 01 12 05 08 05 12 01 30 1a 01 02",
        ),
        (
            m.provide_contract(b"\x01", m.payment(5, b"\x30")),
            "08 06 3a 0a 0a 01 01 12 05 08 05 12 01 30",
        ),
    ],
)
def test_constructor_bytes(msg: m.TwoWayChannelMessage, hex_bytes: str) -> None:
    assert m.encode_message(msg) == bytes.fromhex(hex_bytes)


def test_client_version_with_previous_contract_hash() -> None:
    txid = bytes(range(32))
    payload = m.encode_message(m.client_version(2, 3600, txid))
    expected = bytes.fromhex("08 01 12 29 08 02 10 00 1a 20") + txid + bytes.fromhex("20 90 1c")
    assert payload == expected


def test_client_version_rejects_a_short_contract_hash() -> None:
    with pytest.raises(ValueError):
        m.client_version(2, previous_contract_hash=b"\x00" * 31)


def test_constructors_reject_negative_amounts() -> None:
    with pytest.raises(ValueError):
        m.update_payment(-1, b"\x30")


# -- decoding -------------------------------------------------------------------------------------


def test_decode_known_message() -> None:
    msg = m.decode_message(bytes.fromhex("080112080802100020c4a205"))
    assert msg.type == MessageType.CLIENT_VERSION
    assert msg.client_version.major == 2
    assert msg.client_version.time_window_secs == 86340


@pytest.mark.parametrize(
    "hex_payload, why",
    [
        ("", "zero-length: type missing"),
        ("ff ff ff", "malformed"),
        ("08", "truncated varint"),
        ("0a 05 01", "truncated length-delimited field"),
        ("12 04 08 02 10 00", "client_version without type"),
        ("08 63", "unknown MessageType 99"),
        ("08 00", "MessageType 0 is not defined"),
        ("08 08 42 02 08 01", "UPDATE_PAYMENT without signature (nested)"),
        ("08 06 3a 05 0a 01 01 12 00", "initial_payment without its required fields"),
        ("08 03 22 03 0a 01 03", "INITIATE missing three fields"),
        ("08 09 4a 00", "settlement without tx"),
        ("08 09 42 02 08 01", "ignored sub-message still has to be complete (§2.1)"),
        ("08 01 12 02 10 00", "client_version without major"),
    ],
)
def test_decode_rejects(hex_payload: str, why: str) -> None:
    with pytest.raises(m.MessageDecodeError):
        m.decode_message(bytes.fromhex(hex_payload))


def test_missing_field_names_the_field() -> None:
    with pytest.raises(m.MessageDecodeError, match="update_payment.signature"):
        m.decode_message(bytes.fromhex("08 08 42 02 08 01"))


def test_unknown_error_code_reads_as_other_and_round_trips() -> None:
    payload = bytes.fromhex("08 0a 52 02 08 63")
    msg = m.decode_message(payload)
    assert msg.error.code == ErrorCode.OTHER
    assert not msg.error.HasField("code")
    assert m.encode_message(msg) == payload


def test_type_without_payload_field_decodes() -> None:
    # The wire layer only checks proto2 well-formedness; "field missing" is the channel layer's.
    msg = m.decode_message(bytes.fromhex("08 08"))
    assert msg.type == MessageType.UPDATE_PAYMENT
    assert not msg.HasField("update_payment")


def test_field_order_does_not_matter() -> None:
    msg = m.decode_message(bytes.fromhex("1a 04 08 02 10 00 08 02"))
    assert msg.type == MessageType.SERVER_VERSION and msg.server_version.major == 2


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_else(payload: bytes) -> None:
    try:
        msg = m.decode_message(payload)
    except m.MessageDecodeError:
        return
    assert msg.IsInitialized()


# -- encoding -------------------------------------------------------------------------------------


def test_encode_rejects_incomplete_message() -> None:
    with pytest.raises(m.MessageEncodeError):
        m.encode_message(m.TwoWayChannelMessage())
    incomplete = m.TwoWayChannelMessage(type=MessageType.UPDATE_PAYMENT)
    incomplete.update_payment.client_change_value = 1
    with pytest.raises(m.MessageEncodeError, match="signature"):
        m.encode_message(incomplete)


def _contract_of_size(size: int) -> m.TwoWayChannelMessage:
    # PROVIDE_CONTRACT overhead with a 1-byte signature: find the tx length giving `size` bytes.
    for tx_len in range(size, 0, -1):
        msg = m.provide_contract(b"\x00" * tx_len, m.payment(1, b"\x30"))
        if msg.ByteSize() == size:
            return msg
    raise AssertionError(size)


def test_encode_size_limit() -> None:
    assert len(m.encode_message(_contract_of_size(MAX_MESSAGE_SIZE))) == MAX_MESSAGE_SIZE
    with pytest.raises(m.MessageTooLargeError) as info:
        m.encode_message(_contract_of_size(MAX_MESSAGE_SIZE + 1))
    assert info.value.size == MAX_MESSAGE_SIZE + 1
    assert isinstance(info.value, m.MessageEncodeError)


# -- round trips ----------------------------------------------------------------------------------

_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_i32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_blob = st.binary(max_size=80)
_opt_blob = st.none() | _blob

messages = st.one_of(
    st.builds(m.client_version, _i32, _u64, st.none() | st.binary(min_size=32, max_size=32), _i32),
    st.builds(m.server_version, _i32, _i32),
    st.builds(m.initiate, _blob, _u64, _u64, _u64),
    st.builds(m.provide_refund, _blob, _blob),
    st.builds(m.return_refund, _blob),
    st.builds(m.provide_contract, _blob, st.builds(m.payment, _u64, _blob, _opt_blob), _opt_blob),
    st.builds(m.update_payment, _u64, _blob, _opt_blob),
    st.builds(m.payment_ack, _opt_blob),
    st.builds(m.close, _opt_blob),
    st.builds(
        m.error,
        st.sampled_from(list(ErrorCode.values())),
        st.none() | st.text(max_size=40),
        st.none() | _u64,
    ),
    st.just(m.channel_open()),
)


@given(messages)
def test_round_trip(msg: m.TwoWayChannelMessage) -> None:
    payload = m.encode_message(msg)
    decoded = m.decode_message(payload)
    assert decoded == msg
    assert m.encode_message(decoded) == payload


# -- tables ---------------------------------------------------------------------------------------


def test_direction_table_matches_spec() -> None:
    assert m.SENT_BY_CLIENT | m.SENT_BY_SERVER == set(MessageType.values())
    assert m.SENT_BY_CLIENT & m.SENT_BY_SERVER == {MessageType.CLOSE, MessageType.ERROR}
    assert set(m.PAYLOAD_FIELD) == set(MessageType.values())
    for field in m.PAYLOAD_FIELD.values():
        assert field is None or field in m.TwoWayChannelMessage.DESCRIPTOR.fields_by_name


def test_type_name() -> None:
    assert m.type_name(MessageType.PAYMENT_ACK) == "PAYMENT_ACK"
    assert m.type_name(99) == "unknown(99)"


def test_plain_int_types_match_the_enum() -> None:
    names = {name for name in vars(m.MT) if name.isupper()}
    assert names == set(MessageType.keys())
    for name in names:
        assert getattr(m.MT, name) == MessageType.Value(name)
