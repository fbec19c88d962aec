"""
RPC parameters the way Bitcoin Core takes them: positional or named, type-checked with Core's
messages, hashes as display hex.

A method declares its parameters as a list of :class:`Param`; :func:`bind` maps the request's
``params`` (a list, or a dict of named parameters) onto them and checks each JSON type. Errors
carry Core's codes: -3 for a wrong JSON type, -8 for an unknown named parameter or a bad hash,
-1 with the usage line for a wrong number of arguments (Core answers with the method's help).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Optional, Sequence, Union

from twisted_paychan.chain.types import from_display_hex
from twisted_paychan.rpc.errors import RPC_INVALID_PARAMETER, RPC_MISC_ERROR, RPC_TYPE_ERROR, RpcError

_REQUIRED = object()

#: JSON type names as Core words them.
NULL, BOOL, NUMBER, STRING, ARRAY, OBJECT = "null", "bool", "number", "string", "array", "object"


def json_type(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float, Decimal)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    return OBJECT


@dataclass(frozen=True)
class Param:
    name: str
    #: The JSON types accepted (a null means "use the default" for an optional parameter).
    types: tuple[str, ...]
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def usage(method: str, params: Sequence[Param]) -> str:
    words = [p.name if p.required else f"( {p.name} )" for p in params]
    return " ".join([method, *words])


def bind(method: str, spec: Sequence[Param], given: Union[list[Any], dict[str, Any]]) -> list[Any]:
    """The argument values for ``spec``, defaults filled in; RpcError if they do not fit."""
    if isinstance(given, dict):
        names = {p.name for p in spec}
        for name in given:
            if name not in names:
                raise RpcError(RPC_INVALID_PARAMETER, f"Unknown named parameter {name}")
        values = [given.get(p.name) for p in spec]
    else:
        if len(given) > len(spec):
            raise RpcError(RPC_MISC_ERROR, usage(method, spec))
        values = list(given) + [None] * (len(spec) - len(given))
    bound = []
    for param, value in zip(spec, values):
        if value is None:
            if param.required:
                raise RpcError(RPC_MISC_ERROR, usage(method, spec))
            bound.append(param.default)
            continue
        got = json_type(value)
        if got not in param.types:
            raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {got} is not of expected type {param.types[0]}")
        bound.append(value)
    return bound


def parse_hash(value: str, name: str) -> bytes:
    """Core's ParseHashV: 64 hex digits in display order -> internal-order bytes."""
    if len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value}')")
    try:
        return from_display_hex(value)
    except ValueError:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')") from None


def as_int(value: Any, name: str) -> int:
    """A JSON number that must be an integer (Core: "JSON integer out of range" otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {json_type(value)} is not of expected type number")
    if isinstance(value, int):
        return value
    if value != int(value):
        raise RpcError(RPC_TYPE_ERROR, f"{name}: JSON integer out of range")
    return int(value)


def verbosity(value: Any, default: int) -> int:
    """Core's ParseVerbosity: a number, or a bool meaning 1 / 0."""
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    return as_int(value, "verbosity")


def optional_bool(value: Optional[Any], default: bool) -> bool:
    return default if value is None else bool(value)
