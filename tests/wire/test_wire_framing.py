"""
The framed stream (PROTOCOL.md §1): reassembly across reads, the 32767-byte limit, the reaction to
bad input, the idle timeout, one write per frame, and containment of our own handler's bugs.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from twisted_paychan.constants import MAX_MESSAGE_SIZE
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.framing import CloseKind, ConnectionEnd, MessageProtocol, encode_frame

SYNTAX_ERROR_FRAME = bytes.fromhex("00000006 080a52020802")
OTHER_ERROR_FRAME = bytes.fromhex("00000006 080a52020808")

SAMPLE = [
    m.client_version(2),
    m.server_version(2),
    m.initiate(b"\x02" * 33, 100000, 1795558521, 1000),
    m.channel_open(),
    m.update_payment(998000, b"\x30" * 71 + b"\x83", b"\xde\xad\xbe\xef"),
    m.payment_ack(b"\xde\xad\xbe\xef"),
    m.payment_ack(),
    m.close(),
]
SAMPLE_STREAM = b"".join(encode_frame(msg) for msg in SAMPLE)


class CountingTransport(StringTransport):
    """Records every write separately."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class Recorder(MessageProtocol):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.received: list[m.TwoWayChannelMessage] = []
        self.closings: list[ConnectionEnd] = []

    def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
        self.received.append(msg)

    def connectionClosing(self, reason: ConnectionEnd) -> None:
        self.closings.append(reason)


def connected(proto: MessageProtocol | None = None) -> tuple[Any, CountingTransport]:
    proto = proto if proto is not None else Recorder()
    transport = CountingTransport()
    proto.makeConnection(transport)
    return proto, transport


def assert_violation(proto: Recorder, transport: CountingTransport) -> None:
    assert transport.value() == SYNTAX_ERROR_FRAME
    assert transport.disconnecting
    assert proto.closeReason is not None
    assert proto.closeReason.kind is CloseKind.PROTOCOL_VIOLATION
    assert proto.closings == [proto.closeReason]


# -- reassembly -----------------------------------------------------------------------------------


def test_several_frames_in_one_read() -> None:
    proto, transport = connected()
    proto.dataReceived(SAMPLE_STREAM)
    assert proto.received == SAMPLE
    assert transport.value() == b"" and not transport.disconnecting


def test_every_single_split_point() -> None:
    for cut in range(len(SAMPLE_STREAM) + 1):
        proto, _ = connected()
        proto.dataReceived(SAMPLE_STREAM[:cut])
        proto.dataReceived(SAMPLE_STREAM[cut:])
        assert proto.received == SAMPLE, cut


def test_one_byte_at_a_time() -> None:
    proto, _ = connected()
    for i in range(len(SAMPLE_STREAM)):
        proto.dataReceived(SAMPLE_STREAM[i : i + 1])
    assert proto.received == SAMPLE


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE_STREAM)), max_size=30))
def test_any_chunking(cuts: list[int]) -> None:
    proto, _ = connected()
    bounds = [0, *sorted(cuts), len(SAMPLE_STREAM)]
    for start, end in zip(bounds, bounds[1:]):
        proto.dataReceived(SAMPLE_STREAM[start:end])
    assert proto.received == SAMPLE


def test_partial_frame_is_not_delivered() -> None:
    proto, _ = connected()
    frame = encode_frame(SAMPLE[2])
    proto.dataReceived(frame[:-1])
    assert proto.received == []
    proto.dataReceived(frame[-1:])
    assert proto.received == [SAMPLE[2]]


def test_largest_frame_is_accepted() -> None:
    msg = m.provide_contract(b"\x00" * (MAX_MESSAGE_SIZE - 17), m.payment(1, b"\x30"))
    frame = encode_frame(msg)
    assert len(frame) == 4 + MAX_MESSAGE_SIZE
    proto, transport = connected()
    for i in range(0, len(frame), 1000):
        proto.dataReceived(frame[i : i + 1000])
    assert proto.received == [msg]
    assert not transport.disconnecting


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix, length",
    [
        ("00008000", 32768),  # one byte over the limit
        ("7fffffff", 2**31 - 1),
        ("80000000", -(2**31)),  # over 2^31 unsigned: negative, as bitcoinj reads it
        ("ffffffff", -1),
    ],
)
def test_bad_length(prefix: str, length: int) -> None:
    seen: list[int] = []

    class Watching(Recorder):
        def lengthLimitExceeded(self, length: int) -> None:
            seen.append(length)
            super().lengthLimitExceeded(length)

    proto, transport = connected(Watching())
    # A good frame first, then the bad prefix, then a good frame in the same read.
    good = encode_frame(m.channel_open())
    proto.dataReceived(good + bytes.fromhex(prefix) + encode_frame(m.close()))
    assert seen == [length]
    assert proto.received == [m.channel_open()]
    assert_violation(proto, transport)
    assert str(length) in proto.closeReason.detail


def test_bad_length_split_across_reads() -> None:
    proto, transport = connected()
    for byte in bytes.fromhex("80000000"):
        assert transport.value() == b""
        proto.dataReceived(bytes([byte]))
    assert_violation(proto, transport)


def test_nothing_is_buffered_or_processed_after_a_bad_prefix() -> None:
    proto, transport = connected()
    proto.dataReceived(bytes.fromhex("00ffffff"))
    assert_violation(proto, transport)
    chunk = encode_frame(m.close()) * 8192  # 64 KiB of perfectly good frames
    tracemalloc.start()
    try:
        for _ in range(1024):  # 64 MiB in all
            proto.dataReceived(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert proto.received == []
    assert transport.value() == SYNTAX_ERROR_FRAME  # one ERROR, not one per read
    assert len(proto.closings) == 1


@pytest.mark.parametrize(
    "payload_hex",
    [
        "",  # zero-length frame: allowed by framing, fails to parse (no type)
        "ffffffff",  # garbage
        "0863",  # unknown MessageType number
        "12040802 1000",  # top-level required `type` missing
        "08084202 0801",  # UPDATE_PAYMENT without signature (nested required field)
    ],
)
def test_undecodable_payload(payload_hex: str) -> None:
    payload = bytes.fromhex(payload_hex)
    proto, transport = connected()
    frame = len(payload).to_bytes(4, "big") + payload
    proto.dataReceived(encode_frame(m.channel_open()) + frame + encode_frame(m.close()))
    assert proto.received == [m.channel_open()]  # nothing after the bad frame
    assert_violation(proto, transport)
    proto.dataReceived(encode_frame(m.close()))
    assert proto.received == [m.channel_open()]
    assert transport.value() == SYNTAX_ERROR_FRAME


def test_unknown_error_code_is_delivered_as_other() -> None:
    proto, transport = connected()
    proto.dataReceived(bytes.fromhex("00000006 080a52020863"))
    [msg] = proto.received
    assert msg.type == m.MessageType.ERROR and msg.error.code == m.ErrorCode.OTHER
    assert not transport.disconnecting


# -- sending --------------------------------------------------------------------------------------


def test_one_write_per_frame() -> None:
    proto, transport = connected()
    for msg in SAMPLE:
        proto.sendMessage(msg)
    assert transport.writes == [encode_frame(msg) for msg in SAMPLE]


def test_send_rejects_incomplete_and_oversize_messages() -> None:
    proto, transport = connected()
    with pytest.raises(m.MessageEncodeError):
        incomplete = m.TwoWayChannelMessage(type=m.MessageType.UPDATE_PAYMENT)
        incomplete.update_payment.client_change_value = 1
        proto.sendMessage(incomplete)
    with pytest.raises(m.MessageTooLargeError):
        proto.sendMessage(m.close(b"\x00" * MAX_MESSAGE_SIZE))
    with pytest.raises(m.MessageTooLargeError):
        proto.sendString(b"\x00" * (MAX_MESSAGE_SIZE + 1))
    assert transport.writes == []
    assert not transport.disconnecting


def test_disconnect_writes_the_final_message_and_stops_delivery() -> None:
    class ClosesOnFirst(Recorder):
        def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
            super().messageReceived(msg)
            self.disconnect("done", m.error(m.ErrorCode.BAD_TRANSACTION))

    proto, transport = connected(ClosesOnFirst())
    proto.dataReceived(SAMPLE_STREAM)
    assert proto.received == SAMPLE[:1]
    assert transport.writes == [encode_frame(m.error(m.ErrorCode.BAD_TRANSACTION))]
    assert transport.disconnecting
    assert proto.closeReason == ConnectionEnd(CloseKind.LOCAL, "done")
    assert proto.closings == [proto.closeReason]
    proto.sendMessage(m.close())  # dropped: the connection is closing
    proto.disconnect("again", m.close())  # no-op
    assert transport.writes == [encode_frame(m.error(m.ErrorCode.BAD_TRANSACTION))]
    assert proto.closings == [ConnectionEnd(CloseKind.LOCAL, "done")]


def test_connection_lost_records_the_reason() -> None:
    proto, _ = connected()
    proto.connectionLost(Failure(ConnectionDone("peer closed")))
    assert proto.closeReason is not None
    assert proto.closeReason.kind is CloseKind.CONNECTION_LOST
    assert proto.closings == []
    proto.dataReceived(SAMPLE_STREAM)
    assert proto.received == []


# -- our own bugs ---------------------------------------------------------------------------------


def test_handler_exception_is_contained() -> None:
    class Buggy(Recorder):
        def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
            super().messageReceived(msg)
            raise ZeroDivisionError("our bug")

    with capturedLogs() as events:
        proto, transport = connected(Buggy())
        proto.dataReceived(SAMPLE_STREAM)  # must not raise
    assert proto.received == SAMPLE[:1]
    assert transport.value() == OTHER_ERROR_FRAME
    assert transport.disconnecting
    assert proto.closeReason.kind is CloseKind.INTERNAL_ERROR
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ZeroDivisionError)


def test_closing_hook_exception_is_contained() -> None:
    class BadHook(Recorder):
        def connectionClosing(self, reason: ConnectionEnd) -> None:
            raise RuntimeError("hook bug")

    with capturedLogs() as events:
        proto, transport = connected(BadHook())
        proto.dataReceived(bytes.fromhex("ffffffff"))
    assert transport.value() == SYNTAX_ERROR_FRAME
    assert transport.disconnecting
    assert any("log_failure" in e for e in events)


# -- flow control ---------------------------------------------------------------------------------


def test_pause_holds_frames_until_resume() -> None:
    class Pausing(Recorder):
        def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
            super().messageReceived(msg)
            self.pauseProducing()

    proto, _ = connected(Pausing())
    proto.dataReceived(SAMPLE_STREAM)
    assert proto.received == SAMPLE[:1]
    for n in range(2, len(SAMPLE) + 1):
        proto.resumeProducing()
        assert proto.received == SAMPLE[:n]


def test_bad_prefix_seen_while_paused_is_reported_on_resume() -> None:
    class Pausing(Recorder):
        def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
            super().messageReceived(msg)
            self.pauseProducing()

    proto, transport = connected(Pausing())
    proto.dataReceived(encode_frame(m.close()) + bytes.fromhex("ffffffff"))
    assert transport.value() == b""
    proto.resumeProducing()
    assert_violation(proto, transport)


# -- idle timeout ---------------------------------------------------------------------------------


def test_idle_timeout_resets_on_complete_frames_only() -> None:
    clock = Clock()
    proto, transport = connected(Recorder(clock=clock, idleTimeout=10))
    clock.advance(9)
    proto.dataReceived(encode_frame(m.close()))  # complete frame: reset
    clock.advance(9)
    proto.dataReceived(encode_frame(m.close())[:3])  # partial frame: no reset
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    assert transport.value() == b""  # closed silently
    assert proto.closeReason.kind is CloseKind.IDLE_TIMEOUT
    assert proto.closings == [proto.closeReason]
    assert clock.getDelayedCalls() == []


def test_idle_timeout_switched_on_and_off() -> None:
    clock = Clock()
    proto, transport = connected(Recorder(clock=clock))
    assert clock.getDelayedCalls() == []
    proto.setIdleTimeout(5)
    clock.advance(4)
    proto.setIdleTimeout(None)
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert not transport.disconnecting
    proto.setIdleTimeout(5)  # restarts from now
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting


def test_idle_timeout_can_be_changed_by_the_handler() -> None:
    clock = Clock()

    class Opening(Recorder):
        def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
            super().messageReceived(msg)
            if msg.type == m.MessageType.CHANNEL_OPEN:
                self.setIdleTimeout(None)

    proto, transport = connected(Opening(clock=clock, idleTimeout=3))
    proto.dataReceived(encode_frame(m.channel_open()))
    clock.advance(1000)
    assert not transport.disconnecting


def test_idle_timer_cancelled_on_close_and_connection_lost() -> None:
    clock = Clock()
    proto, _ = connected(Recorder(clock=clock, idleTimeout=10))
    proto.dataReceived(bytes.fromhex("ffffffff"))
    assert clock.getDelayedCalls() == []
    proto2, _ = connected(Recorder(clock=clock, idleTimeout=10))
    proto2.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_idle_timeout_needs_a_clock_and_a_positive_value() -> None:
    with pytest.raises(ValueError):
        Recorder(idleTimeout=5)
    with pytest.raises(ValueError):
        Recorder(clock=Clock(), idleTimeout=0)


# -- property: frames survive any chunking, whatever the messages ---------------------------------

_frames = st.lists(
    st.one_of(
        st.builds(
            m.update_payment,
            st.integers(0, 2**64 - 1),
            st.binary(max_size=80),
            st.none() | st.binary(max_size=8),
        ),
        st.builds(m.payment_ack, st.none() | st.binary(max_size=8)),
        st.builds(m.close, st.none() | st.binary(max_size=300)),
        st.just(m.channel_open()),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200)
@given(_frames, st.data())
def test_random_messages_random_chunks(
    msgs: list[m.TwoWayChannelMessage], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(msg) for msg in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    proto, transport = connected()
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in zip(bounds, bounds[1:]):
        proto.dataReceived(stream[start:end])
    assert proto.received == msgs
    assert not transport.disconnecting
