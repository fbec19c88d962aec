"""
What ``twistd paychan`` does with each payment: payment handlers, found through Twisted's
plugin system so that a third party can add one without touching this package.

A handler is chosen with ``--handler NAME[:ARG]``. ``NAME`` is the ``name`` of an object that
provides :class:`IPaymentHandlerMaker` and lives in a module of some ``twisted/plugins/``
directory on ``sys.path`` (ours: ``twisted/plugins/paychan_handlers.py``, with ``log`` and
``webhook``); ``ARG`` is everything after the first colon, handed to the maker as it is. The
maker checks ``ARG`` while the options are parsed (a mistake is one line and exit 2, before
anything starts) and, once the server starts, makes the handler factory: a callable that
returns an :class:`~twisted_paychan.net.server_channel.IServerHandler` for each connection
(None closes the connection at once). ``doc/handlers.md`` says how to write one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IAddress
from zope.interface import Attribute, Interface

from twisted_paychan.net.server_channel import IServerHandler

#: Makes the handler of each new connection (``PaymentChannelServerFactory``'s
#: ``handler_factory``): the peer's address in, a handler or None (refuse the connection) out.
HandlerFactory = Callable[[Optional[IAddress]], Optional[IServerHandler]]


class HandlerArgumentError(ValueError):
    """The ``ARG`` of ``--handler NAME:ARG`` is not what the handler needs; the message says why."""


class IPaymentHandlerMaker(Interface):
    """A payment handler for ``twistd paychan --handler NAME[:ARG]``: a Twisted plugin, so the
    object must provide ``twisted.plugin.IPlugin`` too (``@implementer(IPlugin,
    IPaymentHandlerMaker)``), or the scan passes it over."""

    name = Attribute("The NAME in --handler NAME[:ARG]: a str.")
    usage = Attribute("How to write the option, e.g. 'webhook:URL': a str.")
    description = Attribute("One line for --help-handlers: a str.")

    def check(arg: Optional[str]) -> None:
        """Raise :class:`HandlerArgumentError` if ``arg`` (None when no colon was given) is not
        usable. Called while the options are parsed, before anything starts."""

    def make(arg: Optional[str], reactor: Any) -> HandlerFactory:
        """The handler factory for a running server; ``reactor`` is the one it runs on (I/O and
        timers alike)."""


def installed_makers() -> dict[str, IPaymentHandlerMaker]:
    """Every installed handler, by name (Twisted's plugin scan of ``twisted.plugins``)."""
    from twisted import plugins
    from twisted.plugin import getPlugins

    return {maker.name: maker for maker in getPlugins(IPaymentHandlerMaker, plugins)}


def split_option(value: str) -> tuple[str, Optional[str]]:
    """``NAME[:ARG]`` -> (NAME, ARG or None); ARG keeps its own colons (a URL)."""
    name, colon, arg = value.partition(":")
    return name.strip(), (arg if colon else None)


def choose(value: str) -> tuple[IPaymentHandlerMaker, Optional[str]]:
    """The installed maker that ``--handler value`` names, its ``ARG`` checked; otherwise
    :class:`HandlerArgumentError` with one line for the operator."""
    name, arg = split_option(value)
    makers = installed_makers()
    maker = makers.get(name)
    if maker is None:
        known = ", ".join(sorted(makers)) or "none"
        raise HandlerArgumentError(f"no payment handler named {name!r} (installed: {known}; see --help-handlers)")
    maker.check(arg)
    return maker, arg


def describe_installed() -> str:
    """The text of ``--help-handlers``."""
    lines = ["Payment handlers (--handler NAME[:ARG]):"]
    for name, maker in sorted(installed_makers().items()):
        lines.append(f"  {maker.usage:<24} {maker.description}")
    return "\n".join(lines)
