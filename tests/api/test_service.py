"""The API under ``twistd paychan`` (in process): the cookie and ``api.json`` it writes and
removes, ``--api-token-file``, ``none``, TLS, a port it cannot have, and a 401 logged without the
token."""

import datetime
import ipaddress
import json
import os
import socket
import stat

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from twisted_paychan.cli.api_client import ApiClient, running_server
from twisted_paychan.tap import ChannelServerService, Options, StartupRefused

BASE = ["--listen", "tcp:0:interface=127.0.0.1", "--rpc-listen", "none", "--admin-listen", "none"]


def _service(tmp_path, *extra):
    o = Options()
    o.parseOptions(["--data-dir", str(tmp_path / "data"), *BASE, *extra])
    return ChannelServerService(o, reactor)


@pytest_twisted.ensureDeferred
async def test_cookie_endpoint_file_and_a_401_logged_without_the_token(tmp_path):
    svc = _service(tmp_path, "--api-listen", "tcp:0:interface=127.0.0.1")
    logged = []
    globalLogPublisher.addObserver(logged.append)
    svc.startService()
    try:
        data = tmp_path / "data"
        cookie, advertised = data / "api.cookie", data / "api.json"
        assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
        token = cookie.read_text().strip()
        url = json.loads(advertised.read_text())["url"]
        ok = await treq.get(url + "/v1/info", headers={"Authorization": f"Bearer {token}"}, persistent=False)
        assert ok.code == 200 and (await ok.json())["api"] == url
        wrong = token[:-1] + ("x" if token[-1] != "x" else "y")
        refused = await treq.get(url + f"/v1/events?access_token={wrong}", headers={"Authorization": f"Bearer {wrong}"},
                                 persistent=False)
        assert refused.code == 401
        await refused.content()
    finally:
        globalLogPublisher.removeObserver(logged.append)
        await svc.stopService()
    text = [json.dumps({k: str(v) for k, v in e.items()}) for e in logged]
    assert any("401" in t and "/v1/events" in t and "wrong token" in t for t in text)
    assert not any(wrong in t or token in t for t in text)
    assert not cookie.exists() and not advertised.exists()


@pytest_twisted.ensureDeferred
async def test_token_file_and_none(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("my-own-token\n")
    svc = _service(tmp_path, "--api-listen", "tcp:0:interface=127.0.0.1", "--api-token-file", str(token_file))
    svc.startService()
    try:
        data = tmp_path / "data"
        assert not (data / "api.cookie").exists()
        server = running_server(str(data))
        assert server is not None and server.token == "my-own-token"
        status, info = await ApiClient(reactor, server).call("GET", "/v1/info")
        assert status == 200 and info["channels"] == 0
    finally:
        await svc.stopService()
    assert token_file.exists()  # the operator's file is left alone
    svc = _service(tmp_path, "--api-listen", "none")
    svc.startService()
    try:
        assert not (tmp_path / "data" / "api.json").exists()
    finally:
        await svc.stopService()


def test_a_port_in_use_or_an_unreadable_token_refuses_the_start(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        svc = _service(tmp_path, "--api-listen", f"tcp:{port}:interface=127.0.0.1")
        with pytest.raises(StartupRefused, match="cannot listen for the API"):
            svc.startService()
    svc = _service(tmp_path, "--api-listen", "tcp:0:interface=127.0.0.1", "--api-token-file", str(tmp_path / "missing"))
    with pytest.raises(StartupRefused, match="cannot read the API token"):
        svc.startService()


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / "api-key.pem", tmp_path / "api-cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest_twisted.ensureDeferred
async def test_tls(tmp_path):
    key_path, cert_path = _self_signed(tmp_path)
    svc = _service(tmp_path, "--api-listen", f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}")
    svc.startService()
    try:
        server = running_server(str(tmp_path / "data"))
        assert server is not None and server.url.startswith("https://127.0.0.1:")
        assert server.certificate == str(cert_path)
        status, health = await ApiClient(reactor, server).call("GET", "/v1/health")
        assert status == 200 and health["status"] == "ok"
    finally:
        await svc.stopService()
