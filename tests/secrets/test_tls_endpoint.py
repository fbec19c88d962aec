"""``paychan pay --server tls:...``: what the description may hold (the end-to-end test, with a
real server and certificates, is tests/e2e/test_tls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import paychan
from twisted_paychan.cli.tls import TlsClientEndpoint, parse_tls


def _reactor() -> object:
    from twisted.internet import reactor  # HostnameEndpoint wants a real one (name resolution)

    return reactor


def test_a_tls_description_without_trust_roots_uses_the_platform_roots() -> None:
    assert isinstance(parse_tls(_reactor(), "tls:example.com:4243"), TlsClientEndpoint)
    assert isinstance(parse_tls(_reactor(), "tls:example.com:4243:timeout=5"), TlsClientEndpoint)


@pytest.mark.parametrize("description, message", [
    ("tls:example.com", "expected tls:HOST:PORT"),
    ("tls:example.com:http", "bad port"),
    ("tls:example.com:4243:verify=no", "unknown option"),
])
def test_bad_tls_descriptions(description: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tls(_reactor(), description)


def test_trust_roots_must_hold_certificates(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no certificate"):
        parse_tls(_reactor(), f"tls:h:1:trustRoots={tmp_path / 'empty'}")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        parse_tls(_reactor(), f"tls:h:1:trustRoots={tmp_path / 'junk.pem'}")


def test_pay_says_what_is_wrong_with_the_server_endpoint(tmp_path: Path) -> None:
    result = paychan("pay", "--data-dir", str(tmp_path / "c"), "--create", "--server", "tls:h:1:trustRoots=/no/such/dir",
                     "--value", "200000", "--amount", "1000")
    assert result.code == 1 and "is not an endpoint" in result.stderr and "Traceback" not in result.stderr
