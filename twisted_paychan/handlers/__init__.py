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

from twisted_paychan import named_plugins
from twisted_paychan.named_plugins import split_option
from twisted_paychan.net.server_channel import IServerHandler

__all__ = ["HandlerArgumentError", "HandlerFactory", "IPaymentHandlerMaker", "choose", "describe_installed",
           "installed_makers", "split_option"]

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
    return named_plugins.installed(IPaymentHandlerMaker)


def choose(value: str) -> tuple[IPaymentHandlerMaker, Optional[str]]:
    """The installed maker that ``--handler value`` names, its ``ARG`` checked; otherwise
    :class:`HandlerArgumentError` with one line for the operator."""
    return named_plugins.choose(installed_makers(), value, "payment handler", "--help-handlers",
                                HandlerArgumentError)


def describe_installed() -> str:
    """The text of ``--help-handlers``."""
    return named_plugins.describe(installed_makers(), "Payment handlers (--handler NAME[:ARG]):")
