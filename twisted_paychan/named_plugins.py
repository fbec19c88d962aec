"""
Choosing one installed Twisted plugin by name, for the ``twistd paychan`` options that take
``NAME[:ARG]`` (``--handler``, ``--wallet``): the plugin scan, the option's parsing, the one line
an unknown name gets, and the ``--help-...`` listing, written once for every plugin family.

A family's makers have ``name``, ``usage``, ``description`` and ``check(arg)`` (which raises the
family's own error with one line for the operator).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar, cast

from zope.interface.interface import InterfaceClass

M = TypeVar("M")


def installed(interface: InterfaceClass) -> dict[str, Any]:
    """Every installed maker of ``interface``, by name (Twisted's plugin scan of ``twisted.plugins``)."""
    from twisted import plugins
    from twisted.plugin import getPlugins

    # getPlugins is typed for classes; a zope interface is what it takes in fact.
    found: Any = getPlugins(cast(Any, interface), plugins)
    return {maker.name: maker for maker in found}


def split_option(value: str) -> tuple[str, Optional[str]]:
    """``NAME[:ARG]`` -> (NAME, ARG or None); ARG keeps its own colons (a URL)."""
    name, colon, arg = value.partition(":")
    return name.strip(), (arg if colon else None)


def choose(makers: dict[str, M], value: str, kind: str, help_option: str,
           error: Callable[[str], Exception]) -> tuple[M, Optional[str]]:
    """The maker of ``makers`` that ``value`` names, its ``ARG`` checked by the maker; otherwise
    ``error`` with one line naming what is installed."""
    name, arg = split_option(value)
    maker = makers.get(name)
    if maker is None:
        known = ", ".join(sorted(makers)) or "none"
        raise error(f"no {kind} named {name!r} (installed: {known}; see {help_option})")
    maker_any: Any = maker
    maker_any.check(arg)
    return maker, arg


def describe(makers: dict[str, Any], title: str) -> str:
    """The text of a ``--help-...`` option: ``title``, then one line per maker."""
    lines = [title]
    for name, maker in sorted(makers.items()):
        lines.append(f"  {maker.usage:<24} {maker.description}")
    return "\n".join(lines)
