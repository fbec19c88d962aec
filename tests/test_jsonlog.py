"""``--log-format json``: one JSON object per line, readable back by ``twisted.logger``, with
the formatted text and an ISO-8601 time added."""

from __future__ import annotations

import io
import json

from twisted.logger import LogLevel, Logger, LogPublisher, eventFromJSON
from twisted.python.failure import Failure

from twisted_paychan import jsonlog
from twisted_paychan.jsonlog import JsonLineObserver


def test_one_object_per_line_with_text_and_time() -> None:
    out = io.StringIO()
    publisher = LogPublisher(JsonLineObserver(out))
    log = Logger(namespace="test", observer=publisher)
    log.info("channel {txid} (peer {peer}): stored, value {value}, expires {expiry}",
             txid="ab" * 32, peer="127.0.0.1:5000", value=100_000, expiry="2027-01-15T08:00:00Z")
    try:
        raise ValueError("two\nlines")
    except ValueError:
        log.failure("channel {txid} (peer {peer}): failed", Failure(), txid="cd" * 32, peer="-")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and not out.getvalue().startswith("\x1e")
    first = json.loads(lines[0])
    assert first["peer"] == "127.0.0.1:5000" and first["expiry"] == "2027-01-15T08:00:00Z"
    assert first["text"] == f"channel {'ab' * 32} (peer 127.0.0.1:5000): stored, value 100000, expires 2027-01-15T08:00:00Z"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert eventFromJSON(lines[0])["log_level"] is LogLevel.info
    second = json.loads(lines[1])
    assert second["peer"] == "-" and "ValueError" in second["text"]


def test_twistd_destination(monkeypatch) -> None:
    options = {"logfile": None, "nodaemon": True, "logger": None}
    jsonlog.use_for_twistd(options)
    assert options["logger"] == "twisted_paychan.jsonlog.twistd_observer"
    assert jsonlog._destination == "-"
    jsonlog.use_for_twistd({"logfile": "/var/log/paychan.log", "nodaemon": False, "logger": None})
    assert jsonlog._destination == "/var/log/paychan.log"
    jsonlog.use_for_twistd({"logfile": None, "nodaemon": False, "logger": None})
    assert jsonlog._destination == "twistd.log"
