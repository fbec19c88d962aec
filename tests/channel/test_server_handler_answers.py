"""Every kind of answer the application's ``payment_received`` may give reaches the client as
``maybeDeferred`` would make it: a plain value at once, a Deferred when it fires, a coroutine's
result, and a raised exception as a refusal (ERROR{OTHER}, UPDATE_PAYMENT_FAILED)."""

from typing import Any, Callable

from twisted.internet import defer

from channel_pair import Pair, failure_of, result_of
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


class Answering:
    """A handler that answers every payment after the initial one with ``answer(total)``."""

    def __init__(self, answer: Callable[[int], Any]) -> None:
        self.answer = answer

    def channel_opened(self, txid: bytes) -> None:
        pass

    def payment_received(self, txid: bytes, increase: int, total: int, info: Any) -> Any:
        return None if total <= 1000 else self.answer(total)

    def channel_closed(self, reason: CloseReason) -> None:
        pass


def connect(handler: Any) -> tuple[Pair, Any]:
    pair = Pair()
    settings = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
    client = pair.connect(settings, handler=handler)
    result_of(client.opened)
    return pair, client


def test_plain_info_is_acknowledged_at_once():
    pair, client = connect(Answering(lambda total: b"total %d" % total))
    d = client.pay(500)
    pair.pump()
    assert result_of(d).info == b"total 1500"


def test_deferred_answer_waits_until_it_fires():
    answers: list = []

    def answer(total: int) -> defer.Deferred:
        answers.append(defer.Deferred())
        return answers[-1]

    pair, client = connect(Answering(answer))
    d = client.pay(500)
    pair.pump()
    assert not d.called and len(answers) == 1
    answers[0].callback(b"later")
    pair.pump()
    assert result_of(d).info == b"later"


def test_coroutine_answer():
    async def answer(total: int) -> bytes:
        return b"async"

    pair, client = connect(Answering(answer))
    d = client.pay(500)
    pair.pump()
    assert result_of(d).info == b"async"


def test_raised_exception_refuses_the_payment():
    def answer(total: int) -> bytes:
        raise RuntimeError("no thanks")

    pair, client = connect(Answering(answer))
    d = client.pay(500)
    pair.pump()
    f = failure_of(d)
    assert f.check(ChannelClosed) and f.value.reason is CloseReason.REMOTE_SENT_ERROR
    assert pair.server_closed is CloseReason.UPDATE_PAYMENT_FAILED


def test_machine_error_on_a_plain_answer_closes_the_connection():
    """A bug in the machine's completion closes down as it would from a fired Deferred."""
    pair, client = connect(Answering(lambda total: None))
    assert pair.server is not None

    def broken(info: Any) -> list:
        raise AssertionError("machine bug")

    pair.server.machine.payment_acknowledged = broken  # type: ignore[method-assign]
    d = client.pay(500)
    pair.pump()
    assert pair.server_closed is CloseReason.CONNECTION_CLOSED
    assert failure_of(d).check(ChannelClosed)
