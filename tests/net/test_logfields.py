"""What channel log lines say about the peer and about time."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from twisted_paychan.net.logfields import NO_PEER, iso_time, peer_address


class _Transport:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def getPeer(self) -> Any:
        if isinstance(self.peer, Exception):
            raise self.peer
        return self.peer


def test_peer_addresses() -> None:
    assert peer_address(_Transport(IPv4Address("TCP", "203.0.113.5", 50312))) == "203.0.113.5:50312"
    assert peer_address(_Transport(IPv6Address("TCP", "2001:db8::1", 4242))) == "[2001:db8::1]:4242"
    assert peer_address(_Transport(UNIXAddress(None))) == "unix"
    assert peer_address(_Transport(RuntimeError("closed"))) == NO_PEER
    assert peer_address(object()) == NO_PEER


def test_iso_time() -> None:
    assert iso_time(1_800_000_000) == "2027-01-15T08:00:00Z"
    assert iso_time(1_800_000_000.9) == "2027-01-15T08:00:00Z"
