"""``twistd paychan --handler NAME[:ARG]`` and ``--help-handlers``: the handlers are found by
Twisted's plugin scan, and a mistake is one line and a non-zero exit, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from twisted_paychan.handlers import IPaymentHandlerMaker, installed_makers, split_option
from twisted_paychan.handlers.log import LogHandlerMaker
from twisted_paychan.tap import Options

REPO = Path(__file__).resolve().parents[2]


def twistd(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "paychan", *argv],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_log_and_webhook_are_installed_plugins() -> None:
    makers = installed_makers()
    assert {"accept", "log", "webhook"} <= set(makers)
    assert all(IPaymentHandlerMaker.providedBy(m) for m in makers.values())


def test_the_default_is_log() -> None:
    o = Options()
    o.parseOptions([])
    maker, arg = o["handler-maker"]
    assert isinstance(maker, LogHandlerMaker) and arg is None


def test_the_argument_keeps_its_colons() -> None:
    assert split_option("webhook:http://127.0.0.1:8080/x") == ("webhook", "http://127.0.0.1:8080/x")
    assert split_option("log") == ("log", None)


@pytest.mark.parametrize("value, message", [
    ("nosuch", "--handler: no payment handler named 'nosuch' (installed: "),
    ("webhook", "--handler: the webhook handler needs an http(s) URL"),
    ("webhook:ftp://x/", "--handler: the webhook handler needs an http(s) URL"),
    ("log:loud", "--handler: the log handler takes no argument"),
])
def test_a_bad_handler_is_a_usage_error(value: str, message: str) -> None:
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(["--handler", value])
    assert str(e.value).startswith(message)


def test_help_handlers_lists_them() -> None:
    done = twistd("--help-handlers")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Payment handlers (--handler NAME[:ARG]):"
    assert any(line.split()[0] == "log" for line in lines[1:])
    assert any(line.split()[0] == "webhook:URL" for line in lines[1:])


def test_an_unknown_handler_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = twistd("--data-dir", str(tmp_path / "d"), "--handler", "nosuch")
    assert done.returncode != 0
    assert "--handler: no payment handler named 'nosuch'" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "d").exists()  # nothing started


def test_the_log_handler_logs_each_event_with_the_peer() -> None:
    from twisted.internet.address import IPv4Address
    from twisted.logger import Logger, formatEvent

    from twisted_paychan.channel.errors import CloseReason

    events: list[dict] = []
    handler = LogHandlerMaker().make(None, None)(IPv4Address("TCP", "10.0.0.7", 4321))
    handler.log = Logger(namespace="test", observer=events.append)  # type: ignore[union-attr]
    assert handler is not None
    handler.channel_opened(bytes(32))
    assert handler.payment_received(bytes(32), 1000, 3000, None) is None  # accepted, no ack info
    assert len(events) == 1  # a line per payment only with --verbose
    from twisted_paychan import logs

    logs.set_verbose()
    try:
        assert handler.payment_received(bytes(32), 1000, 3000, None) is None
    finally:
        logs.set_verbose(False)
    handler.channel_closed(CloseReason.CLIENT_REQUESTED_CLOSE)
    lines = [formatEvent(e) for e in events]
    assert lines == [
        f"channel {'00' * 32} (peer 10.0.0.7:4321): opened",
        f"channel {'00' * 32} (peer 10.0.0.7:4321): payment of 1000 sat, 3000 sat in all",
        f"channel {'00' * 32} (peer 10.0.0.7:4321): connection ended (CLIENT_REQUESTED_CLOSE)",
    ]


def test_accept_accepts_in_silence() -> None:
    o = Options()
    o.parseOptions(["--handler", "accept"])
    maker, arg = o["handler-maker"]
    handler = maker.make(arg, None)(None)
    assert handler.payment_received(bytes(32), 1000, 1000, None) is None
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--handler", "accept:x"])
