"""
How the chain backend is doing, as one small typed value.

A server whose node stopped answering must say so where an operator looks (the log, once per
change, and ``/v1/health``), and must never take a node outage for a verdict on a transaction.
:class:`HealthTracker` is fed the outcome of every poll and broadcast (``RpcChain`` does it) and
keeps a :class:`ChainHealth`: its state, since when, why, and how many failures in a row. It logs
only when the state changes (node down, then refusing our credentials, then fine again: three
lines, however many polls failed in between). :func:`chain_health` reads it from any chain: the
embedded node, which runs in our own process, is always ``OK``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_paychan.rpc.connection import RpcAuthError, RpcConnectionError, RpcProtocolError
from twisted_paychan.rpc.errors import RPC_IN_WARMUP, RpcError


class ChainHealthState(enum.Enum):
    """What the last call to the node found."""

    #: Not asked yet.
    STARTING = "starting"
    #: The node answers.
    OK = "ok"
    #: No connection, a lost connection or no answer in time (the node is down or restarting).
    UNREACHABLE = "unreachable"
    #: HTTP 401/403, even after reading the cookie file again: wrong credentials or cookie path.
    AUTH_REFUSED = "auth-refused"
    #: The node is starting up (RPC error -28) and answers nothing else yet.
    WARMING_UP = "warming-up"
    #: Something answered that is not Core's JSON-RPC, or the node failed a call we need.
    BAD_ANSWER = "bad-answer"


@dataclass(frozen=True)
class ChainHealth:
    """The chain backend's health, for ``/v1/health`` and the log.

    ``since``: the clock's seconds when this state began; ``detail``: the last failure's message
    (empty when OK; never a password); ``failures``: failed calls in a row; ``last_ok``: when the
    node last answered (None if never)."""

    state: ChainHealthState
    since: float
    detail: str = ""
    failures: int = 0
    last_ok: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.state is ChainHealthState.OK

    def to_json(self) -> dict[str, object]:
        return {"state": self.state.value, "since": self.since, "detail": self.detail,
                "failures": self.failures, "last_ok": self.last_ok}


def classify(error: BaseException) -> ChainHealthState:
    """The state a failed call leaves the backend in."""
    if isinstance(error, RpcConnectionError):
        return ChainHealthState.UNREACHABLE
    if isinstance(error, RpcAuthError):
        return ChainHealthState.AUTH_REFUSED
    if isinstance(error, RpcError) and error.code == RPC_IN_WARMUP:
        return ChainHealthState.WARMING_UP
    if isinstance(error, (RpcProtocolError, RpcError)):
        return ChainHealthState.BAD_ANSWER
    return ChainHealthState.UNREACHABLE


class HealthTracker:
    """The current :class:`ChainHealth` of the node named ``node``, updated by :meth:`succeeded`
    and :meth:`failed`; a change of state is logged once."""

    log = Logger()

    def __init__(self, node: str, clock: IReactorTime) -> None:
        self._node = node
        self._clock = clock
        self.health = ChainHealth(ChainHealthState.STARTING, clock.seconds())

    def succeeded(self) -> None:
        now = self._clock.seconds()
        old = self.health
        if old.state is not ChainHealthState.OK:
            if old.state is not ChainHealthState.STARTING:
                self.log.info("{node} answers again (after {n} failed call(s) since {state})", node=self._node,
                              n=old.failures, state=old.state.value)
            self.health = ChainHealth(ChainHealthState.OK, now, last_ok=now)
        else:
            self.health = ChainHealth(ChainHealthState.OK, old.since, last_ok=now)

    def failed(self, error: BaseException) -> None:
        state = classify(error)
        old = self.health
        detail = str(error)
        if state is old.state:
            self.health = ChainHealth(state, old.since, detail, old.failures + 1, old.last_ok)
            return
        self.log.warn("{node}: {state} ({detail}); will keep trying", node=self._node, state=state.value,
                      detail=detail)
        self.health = ChainHealth(state, self._clock.seconds(), detail, old.failures + 1, old.last_ok)


def chain_health(chain: object) -> ChainHealth:
    """The health of any chain we ship: an RPC chain's tracked state; an in-process chain (the
    embedded node, the memory chain) is always OK."""
    tracker = getattr(chain, "health_tracker", None)
    if isinstance(tracker, HealthTracker):
        return tracker.health
    return ChainHealth(ChainHealthState.OK, 0.0)


__all__ = ["ChainHealthState", "ChainHealth", "HealthTracker", "chain_health", "classify"]
