"""Issue 16, part 4: TLS endpoints end to end.

The server listens with Twisted's ``ssl:`` endpoint on a certificate the test makes (signed by
a CA the test makes too); ``paychan pay --server tls:localhost:PORT:trustRoots=DIR`` verifies it
and pays. A client that cannot verify the certificate (another CA, or none: the platform's
roots do not know it) refuses: the handshake fails, nothing is sent, nothing is paid.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import threads

from procs import REPO, ServerProcess

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(directory: Path, common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA, its certificate alone in ``directory`` (what ``trustRoots=`` takes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(mode=0o700)
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _server_certificate(tmp: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_path, cert_path = tmp / "server-key.pem", tmp / "server-cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _paychan(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest_twisted.ensureDeferred
async def test_pay_over_tls_verifies_the_server(tmp_path: Path) -> None:
    ca_key, ca = _ca(tmp_path / "trusted", "paychan test CA")
    _ca(tmp_path / "other", "some other CA")
    key_path, cert_path = _server_certificate(tmp_path, ca_key, ca)
    server = ServerProcess(tmp_path / "server")
    server.extra = ("--listen", f"ssl:{server.port}:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}")
    await server.start()
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    client_dir = str(tmp_path / "client")
    tls = f"tls:localhost:{server.port}"
    pay = ["pay", *chain, "--data-dir", client_dir, "--value", "200000", "--amount", "1000", "--json"]
    try:
        def scenario() -> dict[str, subprocess.CompletedProcess[str]]:
            address = _paychan("wallet", "--data-dir", client_dir, *chain, "--create", "new-address").stdout.strip()
            assert _paychan("regtest-fund", *chain, address, "1000000").returncode == 0
            return {
                "untrusted": _paychan(*pay, "--server", f"{tls}:trustRoots={tmp_path / 'other'}"),
                "platform": _paychan(*pay, "--server", tls),
                "verified": _paychan(*pay, "--server", f"{tls}:trustRoots={tmp_path / 'trusted'}",
                                     "--count", "2", "--settle"),
            }

        runs = await threads.deferToThread(scenario)
    finally:
        await server.stop()
    for refused in ("untrusted", "platform"):
        done = runs[refused]
        assert done.returncode == 1, (refused, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert "its TLS certificate cannot be verified" in done.stderr and "certificate verify failed" in done.stderr, done.stderr
    verified = runs["verified"]
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["resumed"] is False  # the refused attempts opened no channel
    assert "settlement_txid" in result
    listing = json.loads(_paychan("channels", "--data-dir", client_dir, "--json").stdout)
    assert len(listing["channels"]) == 1 and listing["counts"] == {"client": {"settled": 1}}
