"""
The connection machines' transition tables (``SERVER_MOVES``, ``CLIENT_MOVES``) cover every
step; a malformed message (a missing payload or required field) is ``ERROR{SYNTAX_ERROR}`` in
every step that handles messages and waits its turn in one that queues; completion methods
refuse, with a local usage error, to run in a step that has no effect outstanding for them.
"""

from __future__ import annotations

import typing
from typing import Any, Callable

import pytest

from check_matrix_helpers import (
    NOW,
    SERVER_KEY,
    assert_refused,
    client_fresh,
    client_funding,
    client_open,
    client_paying,
    client_storing,
    client_waiting_for_initiate,
    client_waiting_for_open,
    client_waiting_for_refund,
    initiate,
    of_kind,
    sent_types,
    server_broadcasting,
    server_fresh,
    server_initiated,
    server_open,
    server_storing_payment,
    server_waiting_on_contract,
)
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.client import CLIENT_MOVES, ClientStep
from twisted_paychan.channel.errors import ChannelUsageError, CloseReason, ErrorCode
from twisted_paychan.channel.server import SERVER_MOVES, Inbox, ServerStep
from twisted_paychan.wire import messages as m
from twisted_paychan.wire import received as r

MT = m.MessageType
SYNTAX = ErrorCode.SYNTAX_ERROR
INVALID = CloseReason.REMOTE_SENT_INVALID_MESSAGE
MESSAGE_CLASSES = set(typing.get_args(r.ReceivedMessage))


def test_every_server_step_has_a_row() -> None:
    assert set(SERVER_MOVES) == set(ServerStep)
    for step, row in SERVER_MOVES.items():
        if isinstance(row, Inbox):
            continue
        assert set(row) <= MESSAGE_CLASSES, step
        assert {r.Close, r.Error, r.Malformed} <= set(row), step


def test_every_client_step_has_a_row() -> None:
    assert set(CLIENT_MOVES) == set(ClientStep)
    for step, row in CLIENT_MOVES.items():
        if row is None:
            continue
        assert set(row) <= MESSAGE_CLASSES, step
        assert {r.Close, r.Error, r.PaymentAck, r.Malformed} <= set(row), step


def test_the_server_queues_exactly_in_the_steps_that_wait_for_an_effect() -> None:
    queueing = {step for step, row in SERVER_MOVES.items() if row is Inbox.QUEUE}
    assert queueing == {
        ServerStep.LOOKING_UP_RESUME,
        ServerStep.WAITING_ON_SERVER_KEY,
        ServerStep.STORING_CHANNEL,
        ServerStep.STORING_PAYMENT,
        ServerStep.WAITING_ON_APPLICATION,
    }


# -- malformed messages ------------------------------------------------------------------------

MALFORMED = r.Malformed("UPDATE_PAYMENT", "UPDATE_PAYMENT without update_payment")

SERVER_HANDLING_STEPS: dict[str, Callable[[], Any]] = {
    "WAITING_ON_CLIENT_VERSION": lambda: server_fresh(2),
    "WAITING_ON_UNSIGNED_REFUND": lambda: server_initiated(1),
    "WAITING_ON_CONTRACT": lambda: server_waiting_on_contract(2),
    "WAITING_ON_MULTISIG_ACCEPTANCE": lambda: server_broadcasting(2),
    "CHANNEL_OPEN": lambda: server_open(2),
}


@pytest.mark.parametrize("step", SERVER_HANDLING_STEPS)
def test_server_answers_a_malformed_message_in_every_step_that_handles_messages(step: str) -> None:
    s = SERVER_HANDLING_STEPS[step]()
    assert s.step is ServerStep[step]
    assert_refused(s.machine.receive(MALFORMED, NOW), SYNTAX, INVALID)


def test_server_answers_a_malformed_message_in_its_turn_after_a_queue() -> None:
    s = server_storing_payment(2)
    assert s.machine.receive(MALFORMED, NOW) == []
    [notify] = s.machine.payment_stored()
    assert isinstance(notify, fx.NotifyPayment)
    out = s.machine.payment_acknowledged(None)
    assert sent_types(out) == [MT.PAYMENT_ACK, MT.ERROR]  # the stored payment is acked first
    assert_refused(out[1:], SYNTAX, INVALID)


CLIENT_HANDLING_STEPS: dict[str, Callable[[], Any]] = {
    "WAITING_FOR_VERSION_NEGOTIATION": lambda: client_fresh(2),
    "WAITING_FOR_INITIATE": lambda: client_waiting_for_initiate(2),
    "FUNDING_CONTRACT": lambda: client_funding(2),
    "WAITING_FOR_REFUND_RETURN": lambda: client_waiting_for_refund(),
    "STORING_CHANNEL": lambda: client_storing(2),
    "WAITING_FOR_CHANNEL_OPEN": lambda: client_waiting_for_open(2),
    "CHANNEL_OPEN": lambda: client_open(2),
}


@pytest.mark.parametrize("step", CLIENT_HANDLING_STEPS)
def test_client_answers_a_malformed_message_in_every_step_that_handles_messages(step: str) -> None:
    s = CLIENT_HANDLING_STEPS[step]()
    assert s.step is ClientStep[step]
    assert_refused(s.machine.receive(MALFORMED, NOW), SYNTAX, INVALID)


def _cleared(message: m.TwoWayChannelMessage, *path: str) -> m.TwoWayChannelMessage:
    body: Any = message
    for name in path[:-1]:
        body = getattr(body, name)
    body.ClearField(path[-1])
    return message


SERVER_MISSING_FIELDS: dict[str, Callable[[], tuple[Any, m.TwoWayChannelMessage]]] = {
    "client_version.major": lambda: (server_fresh(2), _cleared(m.client_version(2), "client_version", "major")),
    "provide_refund.tx": lambda: (
        (s := server_initiated(1)), _cleared(s.provide_refund(), "provide_refund", "tx")
    ),
    "provide_refund.multisig_key": lambda: (
        (s := server_initiated(1)), _cleared(s.provide_refund(), "provide_refund", "multisig_key")
    ),
    "provide_contract.tx": lambda: (
        (s := server_waiting_on_contract(2)), _cleared(s.provide_contract(), "provide_contract", "tx")
    ),
    "provide_contract.initial_payment.signature": lambda: (
        (s := server_waiting_on_contract(2)),
        _cleared(s.provide_contract(), "provide_contract", "initial_payment", "signature"),
    ),
    "update_payment.signature": lambda: (
        (s := server_open(2)), _cleared(s.update(s.client_change - 1000), "update_payment", "signature")
    ),
    "update_payment.client_change_value": lambda: (
        (s := server_open(2)), _cleared(s.update(s.client_change - 1000), "update_payment", "client_change_value")
    ),
}


@pytest.mark.parametrize("field", SERVER_MISSING_FIELDS)
def test_server_refuses_a_message_missing_a_required_field(field: str) -> None:
    s, message = SERVER_MISSING_FIELDS[field]()
    assert_refused(s.receive(message), SYNTAX, INVALID)


CLIENT_MISSING_FIELDS: dict[str, Callable[[], tuple[Any, m.TwoWayChannelMessage]]] = {
    "server_version.major": lambda: (client_fresh(2), _cleared(m.server_version(2), "server_version", "major")),
    **{
        f"initiate.{f}": (lambda f=f: (client_waiting_for_initiate(2), _cleared(initiate(NOW + 3600), "initiate", f)))
        for f in ("multisig_key", "min_accepted_channel_size", "expire_time_secs", "min_payment")
    },
    "return_refund.signature": lambda: (
        client_waiting_for_refund(),
        _cleared(m.return_refund(SERVER_KEY.public_key), "return_refund", "signature"),
    ),
    "settlement.tx": lambda: (client_open(2), _cleared(m.close(b"settlement"), "settlement", "tx")),
}


@pytest.mark.parametrize("field", CLIENT_MISSING_FIELDS)
def test_client_refuses_a_message_missing_a_required_field(field: str) -> None:
    s, message = CLIENT_MISSING_FIELDS[field]()
    assert_refused(s.receive(message), SYNTAX, INVALID)


# -- completions check their step --------------------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [
        lambda s: s.machine.resume_found(None),
        lambda s: s.machine.resume_not_found(),
        lambda s: s.machine.server_key_ready(SERVER_KEY),
        lambda s: s.machine.channel_stored(),
        lambda s: s.machine.contract_accepted(NOW),
        lambda s: s.machine.contract_rejected("no"),
        lambda s: s.machine.payment_stored(),
        lambda s: s.machine.payment_refused("no"),
        lambda s: s.machine.payment_acknowledged(None),
        lambda s: s.machine.payment_ack_failed("no"),
        lambda s: s.machine.settled(b"tx"),
        lambda s: s.machine.settle_failed("no", False),
    ],
    ids=[
        "resume_found", "resume_not_found", "server_key_ready", "channel_stored", "contract_accepted",
        "contract_rejected", "payment_stored", "payment_refused", "payment_acknowledged",
        "payment_ack_failed", "settled", "settle_failed",
    ],
)
def test_server_completion_outside_its_step_is_a_usage_error(completion: Callable[[Any], Any]) -> None:
    s = server_open(2)  # nothing outstanding
    with pytest.raises(ChannelUsageError):
        completion(s)
    assert s.step is ServerStep.CHANNEL_OPEN


@pytest.mark.parametrize(
    "completion",
    [
        lambda s: s.machine.contract_funded(s.contract, NOW),
        lambda s: s.machine.funding_failed("no"),
        lambda s: s.machine.channel_stored(),
    ],
    ids=["contract_funded", "funding_failed", "channel_stored"],
)
def test_client_completion_outside_its_step_is_a_usage_error(completion: Callable[[Any], Any]) -> None:
    s = client_paying(2)
    with pytest.raises(ChannelUsageError):
        completion(s)
    assert s.step is ClientStep.CHANNEL_OPEN


def test_client_change_stored_outside_its_step_is_a_usage_error() -> None:
    s = client_storing(2)
    with pytest.raises(ChannelUsageError):
        s.machine.change_stored()


def test_a_completion_after_the_connection_ended_does_only_the_durable_part() -> None:
    s = server_storing_payment(2)
    s.machine.connection_lost()
    # Nothing goes on the wire; the stored payment is told to the application, with no ack awaited.
    [notify] = s.machine.payment_stored()
    assert isinstance(notify, fx.NotifyPayment) and not notify.awaited and notify.increase > 0
    assert s.machine.record is not None and s.machine.record.value - s.machine.record.best_value == s.client_change
    c = client_funding(2)
    c.machine.disconnect()
    assert of_kind(c.machine.contract_funded(c.contract, NOW), fx.ReleaseContract)


def test_a_local_close_during_a_payment_store_acknowledges_it_first() -> None:
    """A resume that takes the channel over closes the old connection while its payment is
    being stored: the client still hears PAYMENT_ACK for it, then CLOSE."""
    s = server_storing_payment(2)
    assert s.machine.close() == []
    effects = s.machine.payment_stored()
    effects += s.machine.payment_acknowledged(None) if not of_kind(effects, fx.Send) else []
    sent = [e.message.type for e in effects if isinstance(e, fx.Send)]
    assert sent == [m.MT.PAYMENT_ACK, m.MT.CLOSE]
    assert of_kind(effects, fx.Close)
