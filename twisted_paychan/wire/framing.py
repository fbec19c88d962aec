"""
The framed message stream (PROTOCOL.md §1): a Twisted protocol base class that turns bytes into
decoded channel messages and back.

A frame is a 4-byte big-endian length, read as *signed* as bitcoinj does, followed by that many
bytes of one serialized ``TwoWayChannelMessage``; the payload is at most 32767 bytes.
:class:`MessageProtocol` is an ``Int32StringReceiver`` with that limit, but it replaces
``dataReceived`` because the stock one does not fit a server facing untrusted peers:

* after an oversize prefix it keeps the whole buffer and keeps appending every later read to it
  until the transport really closes, re-parsing the bad prefix each time (memory and CPU grow
  with whatever the peer streams);
* it goes on delivering frames that arrived in the same read after the handler decided to close;
* a frame trickled in small reads is re-concatenated on every read (quadratic copying).

Here, once the connection is condemned nothing more is buffered or delivered, partial frames are
collected as a list of chunks and joined once, and the common case (whole frames in one read)
copies each payload once.

On bad input (length negative or over the limit, payload that does not decode) the peer gets
``ERROR{SYNTAX_ERROR}`` and the connection is closed; ``loseConnection`` flushes the ERROR first.
bitcoinj itself sends nothing in that case (§1.2, §1.3); the ERROR is allowed and harmless. If our
own ``messageReceived`` raises, that is our bug, not the peer's: we log it, send
``ERROR{OTHER}`` and close, and the exception never reaches the reactor.

Whoever decides to close, the reason is kept in :attr:`MessageProtocol.closeReason` and passed
once to the :meth:`MessageProtocol.connectionClosing` hook, so the channel layer can report
why the connection ended (for example ``CONNECTION_CLOSED`` or
``REMOTE_SENT_INVALID_MESSAGE``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from twisted_paychan import logs
from twisted_paychan.constants import MAX_MESSAGE_SIZE
from twisted_paychan.wire.messages import (
    ErrorCode,
    MessageDecodeError,
    MessageTooLargeError,
    TwoWayChannelMessage,
    decode_message,
    encode_message,
    error,
    type_name,
)

__all__ = ["CloseKind", "ConnectionEnd", "MessageProtocol", "encode_frame"]

#: The length prefix. Signed, like bitcoinj's ``ProtobufConnection``: a prefix with the top bit
#: set reads as negative and is rejected like an oversize one.
_PREFIX: Final = struct.Struct("!i")
_PREFIX_SIZE: Final = _PREFIX.size


class CloseKind(enum.Enum):
    """Who or what ended the connection."""

    #: The peer sent a bad length or an undecodable payload; we sent ERROR{SYNTAX_ERROR}.
    PROTOCOL_VIOLATION = "protocol-violation"
    #: Nothing arrived for the idle timeout; we sent nothing.
    IDLE_TIMEOUT = "idle-timeout"
    #: Our own ``messageReceived`` raised; we sent ERROR{OTHER}.
    INTERNAL_ERROR = "internal-error"
    #: The upper layer called :meth:`MessageProtocol.disconnect`.
    LOCAL = "local"
    #: The transport went away first: the peer's EOF, a reset, or a close we did not ask for.
    CONNECTION_LOST = "connection-lost"


@dataclass(frozen=True)
class ConnectionEnd:
    """Why the framed stream ended: the kind, and a human-readable detail for logs. The channel
    layer maps it to its own ``channel.errors.CloseReason`` (bitcoinj's close reasons)."""

    kind: CloseKind
    detail: str


def encode_frame(msg: TwoWayChannelMessage) -> bytes:
    """One whole frame (prefix and payload) for ``msg``; raises like :func:`encode_message`."""
    payload = encode_message(msg)
    return _PREFIX.pack(len(payload)) + payload


_SYNTAX_ERROR_FRAME: Final = encode_frame(error(ErrorCode.SYNTAX_ERROR))
_OTHER_ERROR_FRAME: Final = encode_frame(error(ErrorCode.OTHER))


class MessageProtocol(Int32StringReceiver):
    """
    Base class for both ends of a channel connection.

    Subclasses implement :meth:`messageReceived` and send with :meth:`sendMessage`; they end the
    connection with :meth:`disconnect` (optionally with a last ERROR or CLOSE), which also stops
    delivery of anything already received. Subclasses that define ``__init__``,
    ``makeConnection`` or ``connectionLost`` must call the base class's.

    ``clock`` drives the optional idle timeout (seconds; ``None`` = off): if no complete frame
    arrives for that long, the connection is closed silently. The channel layer switches it on
    and off with :meth:`setIdleTimeout`.
    """

    MAX_LENGTH = MAX_MESSAGE_SIZE

    _log = Logger()

    #: Why the connection ended (or is ending); None while it is healthy.
    closeReason: ConnectionEnd | None = None

    def __init__(self, clock: IReactorTime | None = None, idleTimeout: float | None = None):
        self.clock = clock
        self._idleTimeout: float | None = None
        self._idleCall: IDelayedCall | None = None
        # True from the moment anyone decides to close: input is then discarded unread.
        self._condemned = False
        # An incomplete frame, as the chunks received so far; joined once it can make progress.
        self._pending: list[bytes] = []
        self._pendingSize = 0
        # Bytes needed in _pending before parsing can progress (prefix, or prefix + payload).
        self._wanted = 0
        if idleTimeout is not None:
            self.setIdleTimeout(idleTimeout)

    # -- for subclasses ---------------------------------------------------------------------------

    def messageReceived(self, msg: TwoWayChannelMessage) -> None:
        """Called with each decoded, well-formed message, in order. Override this."""
        raise NotImplementedError

    def connectionClosing(self, reason: ConnectionEnd) -> None:
        """
        Called once, when the wire layer or :meth:`disconnect` decides to close (not when the
        peer closes first: ``connectionLost`` covers that, with ``closeReason`` set to
        ``CONNECTION_LOST``). Any last frame has been written. Override to tell the channel
        layer; exceptions are logged and ignored.
        """

    def sendMessage(self, msg: TwoWayChannelMessage) -> None:
        """
        Send one message as one frame, in a single ``transport.write``.

        Raises :class:`MessageEncodeError` (or :class:`MessageTooLargeError`) at once for a
        message that cannot go on the wire. After the connection has been condemned, the message
        is dropped: the peer will not read it anyway.
        """
        self.sendString(encode_message(msg))

    def disconnect(self, detail: str, finalMessage: TwoWayChannelMessage | None = None) -> None:
        """
        Close the connection (reason ``LOCAL``), first writing ``finalMessage`` if given (the
        protocol asks for an ERROR or a CLOSE before closing, §1.4). Input already received but
        not yet delivered is dropped. Does nothing if the connection is already closing.
        """
        frame = encode_frame(finalMessage) if finalMessage is not None else b""
        self._close(ConnectionEnd(CloseKind.LOCAL, detail), frame)

    def setIdleTimeout(self, seconds: float | None) -> None:
        """Start (or restart) the idle timeout with ``seconds``, or switch it off with None."""
        if seconds is not None:
            if seconds <= 0:
                raise ValueError(f"idle timeout must be positive, not {seconds}")
            if self.clock is None:
                raise ValueError("an idle timeout needs a clock (IReactorTime)")
        self._idleTimeout = seconds
        self._cancelIdleTimer()
        if self.connected and not self._condemned:
            self._startIdleTimer()

    # -- Int32StringReceiver ----------------------------------------------------------------------

    def makeConnection(self, transport: ITransport) -> None:
        self._startIdleTimer()
        Int32StringReceiver.makeConnection(self, transport)

    def dataReceived(self, data: bytes) -> None:
        if self._condemned:
            return
        if self._pending:
            self._pending.append(data)
            self._pendingSize += len(data)
            if self._pendingSize < self._wanted:
                return
            data = b"".join(self._pending)
            self._pending = []
            self._pendingSize = 0
        self._consume(data)

    def stringReceived(self, string: bytes) -> None:
        """One complete frame payload: decode it and hand it to :meth:`messageReceived`."""
        idleCall = self._idleCall
        if idleCall is not None and self._idleTimeout is not None:
            idleCall.reset(self._idleTimeout)
        try:
            msg = decode_message(string)
        except MessageDecodeError as e:
            self._close(ConnectionEnd(CloseKind.PROTOCOL_VIOLATION, str(e)), _SYNTAX_ERROR_FRAME)
            return
        try:
            self.messageReceived(msg)
        except Exception:
            self._log.failure(
                "messageReceived raised on {msgType}; closing the connection",
                msgType=type_name(msg.type),
            )
            self._close(
                ConnectionEnd(CloseKind.INTERNAL_ERROR, f"handler failed on {type_name(msg.type)}"),
                _OTHER_ERROR_FRAME,
            )

    def lengthLimitExceeded(self, length: int) -> None:
        """A prefix outside ``0..MAX_LENGTH`` (negative when read as signed)."""
        self._close(
            ConnectionEnd(
                CloseKind.PROTOCOL_VIOLATION,
                f"frame length {length} outside 0..{self.MAX_LENGTH}",
            ),
            _SYNTAX_ERROR_FRAME,
        )

    def sendString(self, string: bytes) -> None:
        """Send an already-encoded payload as one frame (one write); see :meth:`sendMessage`."""
        if len(string) > self.MAX_LENGTH:
            raise MessageTooLargeError(len(string))
        if self._condemned:
            self._log.debug("dropping a {size}-byte frame: connection closing", size=len(string))
            return
        transport = self.transport
        if transport is None:
            raise RuntimeError("sendString before the connection was made")
        self.writeFrame(_PREFIX.pack(len(string)) + string)

    def writeFrame(self, frame: bytes) -> None:
        """Hand one whole frame to the transport. The TCP protocols override this to send
        without waiting for the next turn of the reactor (``net.tcp.send_now``)."""
        assert self.transport is not None
        self.transport.write(frame)

    def flushFrames(self) -> None:
        """Write any frames held back (``net.tcp`` holds them during a burst) now: called
        before a last frame and the close, so that nothing overtakes them."""

    @property
    def inFrame(self) -> bool:
        """Whether the bytes received so far end inside a frame (a peer that writes a frame in
        pieces is waiting for the rest to be acknowledged; see ``net.tcp``)."""
        return bool(self._pending)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._condemned = True
        self._cancelIdleTimer()
        self._pending = []
        self._pendingSize = 0
        if self.closeReason is None:
            self.closeReason = ConnectionEnd(CloseKind.CONNECTION_LOST, reason.getErrorMessage())
        super().connectionLost(reason)

    # -- internals --------------------------------------------------------------------------------

    def _consume(self, data: bytes) -> None:
        # The per-frame path: unpack the prefix in place, slice the payload once, deliver.
        offset = 0
        size = len(data)
        unpack = _PREFIX.unpack_from
        limit = self.MAX_LENGTH
        while not self.paused:
            start = offset + _PREFIX_SIZE
            if start > size:
                break
            (length,) = unpack(data, offset)
            if length < 0 or length > limit:
                self.lengthLimitExceeded(length)
                return
            end = start + length
            if end > size:
                break
            offset = end
            self.stringReceived(data[start:end])
            if self._condemned:
                return
        if offset < size:
            rest = data[offset:] if offset else data
            self._pending = [rest]
            self._pendingSize = len(rest)
            self._wanted = _PREFIX_SIZE
            if len(rest) >= _PREFIX_SIZE:
                (length,) = unpack(rest, 0)
                # A bad length seen while paused must be reported on the next read: leave
                # _wanted at the prefix size so that read parses again.
                if 0 <= length <= limit:
                    self._wanted = _PREFIX_SIZE + length

    def _close(self, reason: ConnectionEnd, lastFrame: bytes) -> None:
        if self._condemned:
            return
        self._condemned = True
        self.closeReason = reason
        self._pending = []
        self._pendingSize = 0
        self._cancelIdleTimer()
        if reason.kind is CloseKind.PROTOCOL_VIOLATION:
            self._log.info("peer protocol violation, closing: {detail}", detail=reason.detail)
        elif logs.verbose:  # once per connection: only when asked for (see ``twisted_paychan.logs``)
            self._log.debug(
                "closing ({kind}): {detail}", kind=reason.kind.value, detail=reason.detail
            )
        transport = self.transport
        if transport is not None:
            self.flushFrames()
            if lastFrame:
                transport.write(lastFrame)
        try:
            self.connectionClosing(reason)
        except Exception:
            self._log.failure("connectionClosing hook raised")
        if transport is not None:
            transport.loseConnection()

    def _startIdleTimer(self) -> None:
        if self._idleTimeout is not None and self.clock is not None:
            self._idleCall = self.clock.callLater(self._idleTimeout, self._idleExpired)

    def _cancelIdleTimer(self) -> None:
        idleCall = self._idleCall
        if idleCall is not None:
            self._idleCall = None
            if idleCall.active():
                idleCall.cancel()

    def _idleExpired(self) -> None:
        self._idleCall = None
        self._log.info("no frame for {seconds} s; closing", seconds=self._idleTimeout)
        self._close(
            ConnectionEnd(CloseKind.IDLE_TIMEOUT, f"no frame received for {self._idleTimeout} s"),
            b"",
        )
