"""
JSON with exact amounts.

Bitcoin Core writes amounts as JSON numbers with eight decimals (``50.00000000``) and clients
that care read them as decimals, never as binary floats. The standard library can read that way
(``parse_float=Decimal``) but cannot write a Decimal as a bare number, so :func:`dumps` is a
small encoder of its own: Decimals are written as their digits, everything else as
``json.dumps`` writes it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

_SATOSHI: Final = Decimal("0.00000001")
_SAT_PER_BTC: Final = 100_000_000


def btc(sat: int) -> Decimal:
    """Satoshis as the BTC amount Core prints (eight decimals)."""
    return (Decimal(sat) / _SAT_PER_BTC).quantize(_SATOSHI)


def sat(amount: Any) -> int:
    """A BTC amount (Decimal, int, or the digits) as satoshis; ValueError if it has more than
    eight decimals or is not a finite number (Core: "Invalid amount")."""
    if isinstance(amount, bool):
        raise ValueError("an amount is a number")
    value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    sats = value * _SAT_PER_BTC
    if sats != sats.to_integral_value():
        raise ValueError(f"amount {amount} has more than eight decimals")
    return int(sats)


def loads(text: bytes | str) -> Any:
    """Parse JSON, reading every non-integer number as a Decimal."""
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as JSON")
        out.append(format(value, "f"))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        out.append(json.dumps(value))
