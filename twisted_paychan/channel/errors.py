"""
The two kinds of error (STYLE pattern 3).

- :class:`ChannelUsageError`: our own API was misused (pay before open, two payments in flight,
  a negative amount). Raised at once to the caller; nothing goes on the wire.
- :class:`RemoteProtocolError`: the peer broke the protocol. It carries the wire ERROR code to
  send (or ``None`` when nothing must be sent) and the close reason to report locally.

:class:`CloseReason` is bitcoinj's ``PaymentChannelCloseException.CloseReason`` (§8.6): local
API only, never on the wire.
"""

from __future__ import annotations

import enum
from typing import Collection, Optional, TypeVar


class CloseReason(enum.IntEnum):
    """Why a channel connection ended. Values before CLIENT_REQUESTED_CLOSE mean "do not
    retry"; from it onward "a retry or reconnect may work" (§8.6)."""

    NO_ACCEPTABLE_VERSION = 0
    TIME_WINDOW_UNACCEPTABLE = 1
    SERVER_REQUESTED_TOO_MUCH_VALUE = 2
    CHANNEL_EXHAUSTED = 3
    CLIENT_REQUESTED_CLOSE = 4
    SERVER_REQUESTED_CLOSE = 5
    REMOTE_SENT_ERROR = 6
    REMOTE_SENT_INVALID_MESSAGE = 7
    CONNECTION_CLOSED = 8
    UPDATE_PAYMENT_FAILED = 9

    @property
    def retryable(self) -> bool:
        return self >= CloseReason.CLIENT_REQUESTED_CLOSE

    def __str__(self) -> str:
        # An IntEnum prints as its number; a person reading "closed: 8" learns nothing.
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)  # f"{reason}" too


class ErrorCode(enum.IntEnum):
    """``Error.ErrorCode`` on the wire (§2.5)."""

    TIMEOUT = 1
    SYNTAX_ERROR = 2
    NO_ACCEPTABLE_VERSION = 3
    BAD_TRANSACTION = 4
    TIME_WINDOW_UNACCEPTABLE = 5
    CHANNEL_VALUE_TOO_LARGE = 6
    MIN_PAYMENT_TOO_LARGE = 7
    OTHER = 8


class ChannelUsageError(Exception):
    """Our API was used wrongly; nothing was sent."""


class RemoteProtocolError(Exception):
    """The peer violated the protocol: send ``ERROR{code}`` (unless ``code`` is None), then
    close with ``reason``."""

    def __init__(
        self,
        code: Optional[ErrorCode],
        explanation: str,
        reason: CloseReason = CloseReason.REMOTE_SENT_INVALID_MESSAGE,
        expected_value: Optional[int] = None,
    ) -> None:
        super().__init__(explanation)
        self.code = code
        self.explanation = explanation
        self.reason = reason
        self.expected_value = expected_value


class ChannelClosed(Exception):
    """A pending operation ended because the channel connection closed; ``reason`` says why."""

    def __init__(self, reason: CloseReason, detail: str = "") -> None:
        super().__init__(f"{reason.name}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


StepT = TypeVar("StepT", bound=enum.Enum)


def check_completion(completion: str, step: StepT, expected: StepT, ending: Collection[StepT]) -> bool:
    """How both connection machines check a completion method against their step.

    A completion answers the effect the machine asked for in step ``expected``. It may also
    arrive after the connection moved on to one of the ``ending`` steps meanwhile (a local close,
    the peer's CLOSE or ERROR, a lost connection): the effect was still outstanding, and the
    completion then does only what must happen whatever became of the connection (store, give
    coins back, broadcast a stored contract). Returns whether the machine is still in
    ``expected``. In any other step nothing can be waiting for it: :class:`ChannelUsageError`.

    The machines write ``self.step is expected or check_completion(...)``: the same answer,
    without a call in the usual case (each payment completes two or three effects).
    """
    if step is expected:
        return True
    if step in ending:
        return False
    raise ChannelUsageError(f"{completion}() in step '{step.value}': no effect of step '{expected.value}' is outstanding")
