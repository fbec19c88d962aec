"""
Fee estimators: what fee rate (sat/kB) to pay for a named urgency.

The channel code asks for ``"fast"``, ``"normal"`` or ``"economy"``, never for a number of
blocks, so a backend is free to map those names to whatever it can estimate. Rates are sat per
1000 *virtual* bytes, Bitcoin Core's unit, and never below a floor (1000 sat/kB by default:
Bitcoin Core's default minimum relay fee and bitcoinj's REFERENCE_DEFAULT_MIN_TX_FEE).

* :class:`FixedFeeEstimator`: one rate for every target; the in-memory double.
* :class:`TableFeeEstimator`: a configured rate per target.
* The seam for a Bitcoin Core estimator: :data:`CONFIRMATION_TARGETS` says which
  ``estimatesmartfee`` target each name stands for, and :func:`fee_rate_from_estimatesmartfee`
  turns its answer (BTC per kvB) into sat/kB with the floor. The RPC call itself lives with the
  RPC client.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Final, Mapping, Union

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from twisted_paychan.chain.interfaces import IFeeEstimator
from twisted_paychan.constants import FEE_RATE_FLOOR, MAX_MONEY

__all__ = [
    "TARGETS",
    "CONFIRMATION_TARGETS",
    "UnknownTarget",
    "NoFeeEstimate",
    "FixedFeeEstimator",
    "TableFeeEstimator",
    "fee_rate_from_estimatesmartfee",
    "btc_per_kvb_to_sat_per_kb",
]

#: The named targets, most urgent first.
TARGETS: Final = ("fast", "normal", "economy")
#: Blocks to confirmation that each name asks ``estimatesmartfee`` for: next couple of blocks,
#: about an hour, about four hours.
CONFIRMATION_TARGETS: Final = {"fast": 2, "normal": 6, "economy": 24}

_SAT_PER_BTC: Final = Decimal(100_000_000)


class UnknownTarget(ValueError):
    """A target name other than those in :data:`TARGETS` (a programming error)."""


class NoFeeEstimate(Exception):
    """Bitcoin Core has no estimate (yet): too few blocks seen, typically on a fresh node or
    regtest. ``errors`` are the messages it gave."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("no fee estimate: " + ("; ".join(errors) or "no reason given"))
        self.errors = errors


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise UnknownTarget(f"fee target must be one of {', '.join(TARGETS)}; got {target!r}")


def _check_rate(rate: int, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
        raise ValueError(f"{what} must be a non-negative integer sat/kB, got {rate!r}")
    return rate


@implementer(IFeeEstimator)
class FixedFeeEstimator:
    """The same rate for every target (raised to ``floor`` if below it)."""

    def __init__(self, rate: int, floor: int = FEE_RATE_FLOOR) -> None:
        self.rate = max(_check_rate(rate, "rate"), _check_rate(floor, "floor"))

    def fee_rate(self, target: str) -> Deferred[int]:
        _check_target(target)
        return succeed(self.rate)


@implementer(IFeeEstimator)
class TableFeeEstimator:
    """A configured rate for each of ``fast``, ``normal`` and ``economy``, each raised to
    ``floor``. All three must be given, so a typo in configuration is found at start-up."""

    def __init__(self, rates: Mapping[str, int], floor: int = FEE_RATE_FLOOR) -> None:
        unknown = set(rates) - set(TARGETS)
        missing = set(TARGETS) - set(rates)
        if unknown or missing:
            raise UnknownTarget(
                f"fee table needs exactly {', '.join(TARGETS)}"
                f" (missing: {sorted(missing)}, unknown: {sorted(unknown)})"
            )
        floor = _check_rate(floor, "floor")
        self.rates = {t: max(_check_rate(rates[t], f"rate for {t!r}"), floor) for t in TARGETS}

    def fee_rate(self, target: str) -> Deferred[int]:
        _check_target(target)
        return succeed(self.rates[target])


def btc_per_kvb_to_sat_per_kb(feerate: Union[Decimal, str, float, int], floor: int = FEE_RATE_FLOOR) -> int:
    """A BTC/kvB rate as Bitcoin Core's RPC prints it -> sat/kB, rounded up, at least ``floor``.

    Pass a Decimal or the JSON text where possible (``json.loads(..., parse_float=Decimal)``);
    a float is read through its shortest repr, which is exact for Core's 8-decimal values.
    """
    if isinstance(feerate, bool):
        raise ValueError("a fee rate is a number, not a bool")
    try:
        btc = Decimal(str(feerate)) if isinstance(feerate, float) else Decimal(feerate)
    except InvalidOperation:
        raise ValueError(f"not a fee rate: {feerate!r}") from None
    if not btc.is_finite() or btc < 0:
        raise ValueError(f"fee rate must be a non-negative finite number, got {feerate!r}")
    sat = (btc * _SAT_PER_BTC).to_integral_value(rounding=ROUND_CEILING)
    if sat > MAX_MONEY:
        raise ValueError(f"fee rate {feerate!r} BTC/kvB is beyond the money supply")
    return max(int(sat), _check_rate(floor, "floor"))


def fee_rate_from_estimatesmartfee(
    result: Mapping[str, object], floor: int = FEE_RATE_FLOOR
) -> int:
    """sat/kB from an ``estimatesmartfee`` result (``{"feerate": 0.0001234, "blocks": 6}``).

    Raises :class:`NoFeeEstimate` when the result has no ``feerate`` (Core then returns
    ``{"errors": [...], "blocks": 0}``); what to fall back to is the caller's policy.
    """
    if "feerate" not in result:
        errors = result.get("errors") or []
        raise NoFeeEstimate([str(e) for e in errors] if isinstance(errors, list) else [str(errors)])
    feerate = result["feerate"]
    if not isinstance(feerate, (Decimal, str, float, int)):
        raise ValueError(f"feerate is not a number: {feerate!r}")
    return btc_per_kvb_to_sat_per_kb(feerate, floor)
