"""
``GET /v1/health``: whether the server can do its job now, for a load balancer or a monitor.

Healthy when the channel store answers a read, the wallet answers a balance, the chain backend
gives its tip, and that tip is recent (its block time within ``max_tip_age`` of the clock; not
checked on regtest, where blocks come only when someone mines). Each check has a deadline on
the injected clock, so a backend that hangs makes the answer 503, never a hung request.

``chain_problem`` is the seam for a backend that tracks its own health (an RPC chain that saw
its node go away between polls: ``chain.health.chain_health``): a callable that returns the
reason it is unhealthy, or None. A wallet whose keys are in a remote signer (``ISignerStatus``)
adds the check ``signer``: failed while the signer cannot sign (new channels get no key, and
settlements wait).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from twisted_paychan.chain.interfaces import IChain, IWallet
from twisted_paychan.chain.types import ChainTip
from twisted_paychan.store.interfaces import IChannelStore
from twisted_paychan.wallet.remote import ISignerStatus

#: Seconds each backend has to answer.
CHECK_TIMEOUT = 5.0
#: A tip older than this (by its block time) means the node is not following the chain; two
#: hours is what Bitcoin Core allows a block's time to run ahead, and many intervals of 10 min.
DEFAULT_MAX_TIP_AGE = 2 * 3600.0


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    checks: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    tip_height: Optional[int] = None

    def to_json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unhealthy", "checks": self.checks, "reasons": self.reasons,
                "tip_height": self.tip_height}


class HealthCheck:
    def __init__(self, store: IChannelStore, wallet: IWallet, chain: IChain, clock: IReactorTime,
                 max_tip_age: Optional[float] = DEFAULT_MAX_TIP_AGE,
                 chain_problem: Optional[Callable[[], Optional[str]]] = None, timeout: float = CHECK_TIMEOUT) -> None:
        self.store = store
        self.wallet = wallet
        self.chain = chain
        self.clock = clock
        self.max_tip_age = max_tip_age
        self.chain_problem = chain_problem
        self.timeout = timeout

    async def _within(self, call: Callable[[], Any]) -> Any:
        d: defer.Deferred[Any] = defer.maybeDeferred(call)
        d.addTimeout(self.timeout, self.clock)
        return await d

    async def check(self) -> HealthReport:
        checks: dict[str, str] = {}
        reasons: list[str] = []

        async def one(name: str, call: Callable[[], Any]) -> Any:
            try:
                result = await self._within(call)
            except defer.TimeoutError:
                checks[name] = "timeout"
                reasons.append(f"{name}: no answer within {self.timeout:g} s")
                return None
            except Exception as e:
                checks[name] = "failed"
                reasons.append(f"{name}: {type(e).__name__}: {e}")
                return None
            checks[name] = "ok"
            return result

        await one("store", lambda: self.store.server_channel(b"\0" * 32))
        await one("wallet", self.wallet.balance)
        if ISignerStatus.providedBy(self.wallet):  # keys in a remote signer (wallet.remote)
            problem = self.wallet.signer_problem()
            checks["signer"] = "ok" if problem is None else "failed"
            if problem is not None:
                reasons.append(f"signer: {problem}")
        tip: Optional[ChainTip] = await one("chain", self.chain.tip)
        if tip is not None and self.max_tip_age is not None:
            age = self.clock.seconds() - tip.time
            if age > self.max_tip_age:
                checks["chain"] = "stale"
                reasons.append(f"chain: the tip (height {tip.height}) is {int(age)} s old")
        if self.chain_problem is not None:
            problem = self.chain_problem()
            if problem is not None:
                checks["chain"] = "failed"
                reasons.append(f"chain: {problem}")
        return HealthReport(not reasons, checks, reasons, tip.height if tip is not None else None)
