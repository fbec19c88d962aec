"""
``twistd paychan --log-format json``: one JSON object per line, for log collectors.

twistd chooses its log observer itself, from its own options (``--logfile``, ``--nodaemon``),
before the service starts; an application can only hand it a factory through twistd's
``logger`` option. :func:`twistd_observer` is that factory: it writes where twistd
would have written text (standard output with ``--nodaemon`` and no ``--logfile``, or
``--logfile -``; the file named by ``--logfile``, ``twistd.log`` by default) but through
``twisted.logger``'s JSON observer, one event per line (no record separator, so ``jq`` and
line-based shippers read it as it is). twistd takes the factory by its dotted name
(:func:`use_for_twistd`).

Each object holds the event's own fields (``log_format``, ``log_level``, ``log_namespace``,
``log_time``, and the named fields: ``txid``, ``peer``, ``expiry``, ...) plus two added here for
a person reading it: ``text``, the formatted line (with the traceback of a failure), and ``time``, ``log_time`` in ISO-8601.
"""

from __future__ import annotations

import datetime
import sys
from typing import IO, Any, MutableMapping, Optional

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, eventAsText, jsonFileLogObserver
from zope.interface import implementer

__all__ = ["JsonLineObserver", "use_for_twistd", "twistd_observer"]


_JSON_NATIVE = (str, int, float, bool, type(None), list, dict)


@implementer(ILogObserver)
class JsonLineObserver:
    """Writes each event to ``stream`` as one line of JSON, with ``text`` and ``time`` added."""

    def __init__(self, stream: IO[Any]) -> None:
        self._json: FileLogObserver = jsonFileLogObserver(stream, recordSeparator="")

    def __call__(self, event: LogEvent) -> None:
        # Named fields JSON cannot hold (a lazily formatted txid, an enum) go as their text
        # rather than as twisted.logger's {"unpersistable": true}; its own log_* fields stay.
        enriched = {key: value if key.startswith("log_") or isinstance(value, _JSON_NATIVE) else str(value)
                    for key, value in event.items()}
        enriched["text"] = eventAsText(event, includeTimestamp=False, includeSystem=False)
        when = event.get("log_time")
        if isinstance(when, (int, float)):
            moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
            enriched["time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._json(enriched)


#: Where :func:`twistd_observer` writes: set by :func:`use_for_twistd` from twistd's options.
_destination: Optional[str] = None


def use_for_twistd(twistd_options: MutableMapping[str, Any]) -> None:
    """Make twistd log through :func:`twistd_observer`. twistd takes its ``logger`` option as
    a dotted name and calls what it names with no arguments, so where to write is kept here."""
    global _destination
    path = twistd_options.get("logfile") or ""
    _destination = "-" if path == "-" or (not path and twistd_options.get("nodaemon")) else (path or "twistd.log")
    twistd_options["logger"] = f"{__name__}.twistd_observer"


def twistd_observer() -> ILogObserver:
    """The JSON observer twistd starts, writing where its options said (see the module
    docstring)."""
    from twisted.python.logfile import LogFile

    if _destination is None or _destination == "-":
        return JsonLineObserver(sys.stdout)
    return JsonLineObserver(LogFile.fromFullPath(_destination))
