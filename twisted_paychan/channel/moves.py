"""
How the connection machines write their transition tables (``SERVER_MOVES`` in
``channel.server``, ``CLIENT_MOVES`` in ``channel.client``): a row per step, mapping each
received message class (``wire.received``) to the machine method that handles it.

A table holds handlers of many message types, so its own type can only say "some message".
Every entry is therefore built with :func:`on`, whose signature lets mypy check that the handler
takes exactly the message class it is filed under.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from twisted_paychan.wire.received import ReceivedMessage

MachineT = TypeVar("MachineT")
EffectT = TypeVar("EffectT")
MessageT = TypeVar("MessageT", bound=ReceivedMessage)

#: A handler as a table holds it: ``(machine, message, now) -> effects``.
Handler = Callable[[MachineT, Any, int], list[EffectT]]


def on(
    cls: type[MessageT], handler: Callable[[MachineT, MessageT, int], list[EffectT]]
) -> tuple[type, Handler[MachineT, EffectT]]:
    """One entry of a row: ``cls`` is handled by ``handler``."""
    return cls, handler


def handles(
    every_step: tuple[tuple[type, Handler[MachineT, EffectT]], ...], *moves: tuple[type, Handler[MachineT, EffectT]]
) -> Mapping[type, Handler[MachineT, EffectT]]:
    """The row of a step that handles messages: its own ``moves``, plus what every such step
    handles (CLOSE, ERROR, a malformed message, ...)."""
    return dict(moves + every_step)
