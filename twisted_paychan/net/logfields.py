"""
What channel log lines say about where and when: the peer's address and ISO-8601 times.

Every log line about a channel names the peer it is talking to (``channel <txid> (peer
203.0.113.5:50312): ...``), so an operator can tie a channel to a client in the logs, and a
JSON log (``twistd paychan --log-format json``) carries it as the field ``peer``. A channel
with no connection attached (settled at expiry, on the operator's word, after a restart) says
``-``, as an access log does.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

#: What a log line says when no connection is attached to the channel.
NO_PEER: Final = "-"


def peer_address(transport: Any) -> str:
    """``host:port`` of the transport's peer (``[host]:port`` for IPv6), ``unix`` for a unix
    socket, :data:`NO_PEER` when the transport cannot say."""
    try:
        addr = transport.getPeer()
    except Exception:  # a transport that does not know (a test's, a closed one)
        return NO_PEER
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if type(addr).__name__ == "UNIXAddress":
        return "unix"
    return NO_PEER


def iso_time(timestamp: float) -> str:
    """``2026-12-03T16:20:00Z``: a Unix time in UTC, ISO-8601, to the second (channel expiry
    times are whole seconds)."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
