"""
Per-message debug logging, off unless asked for.

twistd writes every log event it is given, debug included (it has no level option), so the
lines that would come once per payment or once per RPC request are not even emitted unless
``verbose`` is set (``twistd paychan --verbose``, ``paychan regtest -v``): formatting and writing
them cost more than the payment itself. The same goes for the embedded kernel's own lines and
each connection's close. :func:`when` writes a time as ISO-8601 next to its Unix value.
"""

import datetime

verbose = False


def when(unix_time: float) -> str:
    """``2026-12-03T16:00:00Z (1796313600)``: a time in a log line, readable and exact."""
    moment = datetime.datetime.fromtimestamp(int(unix_time), datetime.timezone.utc)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%SZ')} ({int(unix_time)})"


def set_verbose(on: bool = True) -> None:
    global verbose
    verbose = on
