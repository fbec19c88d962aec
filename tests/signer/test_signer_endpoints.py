"""How the server reaches the signer, authenticated (issue 18): a Unix socket only its user can
reach (a socket or directory open to others is refused, in one line, by the server and by the
signer), or TLS with certificates both ways (a client whose certificate the signer's CA did not
sign gets nothing). Real sockets: the signer listens in this process, the server's link
connects to it as ``twistd paychan`` would."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, task

from signer_setup import signing_service
from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.signer.endpoints import EndpointError, check_socket, client_endpoint, server_endpoint
from twisted_paychan.signer.service import SignerFactory
from twisted_paychan.wallet.backends import WalletUnusable
from twisted_paychan.wallet.remote import SignerLink, SignerWallet
from twisted_paychan.wallet.signer_backend import SignerBackendMaker

REPO = Path(__file__).resolve().parents[2]


def _socket_at(path: Path, mode: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    os.chmod(path, mode)
    return s


def test_a_private_socket_passes_and_a_missing_one_waits(tmp_path: Path) -> None:
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    check_socket(str(directory / "signer.sock"))  # not there yet: the link retries
    with _socket_at(directory / "signer.sock", 0o600):
        check_socket(str(directory / "signer.sock"))


@pytest.mark.parametrize("dir_mode, sock_mode, message", [
    (0o755, 0o600, "its directory .* is open to others \\(mode 755\\)"),
    (0o700, 0o666, "signer.sock: it is open to others \\(mode 666\\)"),
    (0o770, 0o600, "is open to others \\(mode 770\\)"),
])
def test_a_socket_others_can_reach_is_refused(tmp_path: Path, dir_mode: int, sock_mode: int, message: str) -> None:
    directory = tmp_path / "signer"
    directory.mkdir()
    with _socket_at(directory / "signer.sock", sock_mode):
        directory.chmod(dir_mode)
        with pytest.raises(EndpointError, match=message):
            check_socket(str(directory / "signer.sock"))
        with pytest.raises(WalletUnusable, match="refusing the signer socket"):
            SignerBackendMaker().open(f"unix:{directory / 'signer.sock'}", str(tmp_path), MemoryChain(task.Clock()),
                                      REGTEST, None, reactor)


def test_a_file_that_is_no_socket_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "signer"
    directory.mkdir(mode=0o700)
    (directory / "signer.sock").write_text("not a socket")
    with pytest.raises(EndpointError, match="it is not a socket"):
        check_socket(str(directory / "signer.sock"))


def test_twistd_refuses_a_reachable_socket_in_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o755)
    done = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon",
                           "--pidfile=", "--logfile=-", "paychan", "--data-dir", str(tmp_path / "d"),
                           "--api-listen", "none", "--rpc-listen", "none", "--listen", "tcp:0:interface=127.0.0.1",
                           "--wallet", f"signer:unix:{directory / 'signer.sock'}"],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert (f"paychan: not starting: refusing the signer socket {directory / 'signer.sock'}: its directory "
            f"{directory} is open to others (mode 755)") in output, output
    assert "Traceback" not in output


def test_the_signer_will_not_listen_where_others_can_reach(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o711)
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("x\n")
    passphrase.chmod(0o600)
    done = subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "signer", "--data-dir", str(tmp_path / "s"),
                           "--passphrase-file", str(passphrase), "--listen", f"unix:{directory / 'signer.sock'}"],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "is open to others (mode 711): make it owner-only" in done.stderr and "Traceback" not in done.stderr


# -- TLS ----------------------------------------------------------------------------------------

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, issuer: Any = None, ca: bool = False) -> tuple[Any, x509.Certificate]:
    """A key and its certificate, signed by ``issuer`` (key, certificate) or by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key, issuer_cert = issuer if issuer is not None else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, key: Any, cert: x509.Certificate) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o600)
    return str(path)


async def _link(description: str) -> SignerWallet:
    chain = MemoryChain(reactor)
    wallet = SignerWallet(chain, REGTEST, SignerLink(client_endpoint(reactor, description), reactor, REGTEST,
                                                     description))
    wallet.start()
    for _ in range(200):
        if wallet.signer_problem() is None or wallet.failures or "not connected" not in str(wallet.signer_problem()):
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    return wallet


@pytest_twisted.ensureDeferred
async def test_tls_both_ways(tmp_path: Path) -> None:
    ca = _certificate("paychan signer CA", ca=True)
    (tmp_path / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    signer_pem = _pem(tmp_path / "signer.pem", *_certificate("localhost", ca))
    server_pem = _pem(tmp_path / "server.pem", *_certificate("paychan server", ca))
    stranger_pem = _pem(tmp_path / "stranger.pem", *_certificate("stranger"))  # self-signed
    (tmp_path / "signer").mkdir()
    service = signing_service(tmp_path / "signer", clock=reactor)
    port = await server_endpoint(reactor, f"tls:0:certificate={signer_pem}:clientCA={tmp_path / 'ca.pem'}:"
                                          "interface=127.0.0.1").listen(SignerFactory(service))
    number = port.getHost().port
    wallets = []
    try:
        good = await _link(f"tls:localhost:{number}:certificate={server_pem}:trustRoots={tmp_path / 'ca.pem'}")
        wallets.append(good)
        assert good.signer_problem() is None
        key = await good.provisional_channel_key()
        assert key.public_key in service.channel_keys()

        stranger = await _link(f"tls:localhost:{number}:certificate={stranger_pem}:trustRoots={tmp_path / 'ca.pem'}")
        wallets.append(stranger)
        assert stranger.signer_problem() is not None
        with pytest.raises(Exception):
            await stranger.provisional_channel_key()
        assert len(service.channel_keys()) == 1  # the stranger got nothing
    finally:
        for wallet in wallets:
            wallet.close()
        await port.stopListening()
        service.wallet.close()
        service.ledger.close()


def _signer(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twisted_paychan.cli", "signer", *argv], cwd=str(REPO),
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def test_the_signers_mistakes_are_one_line(tmp_path: Path) -> None:
    done = _signer("--data-dir", str(tmp_path / "s"))
    assert done.returncode == 1 and done.stderr.strip().endswith(
        "paychan signer keeps its keys encrypted: give their passphrase with --passphrase-file"), done.stderr
    # A plaintext wallet file (as `paychan wallet` makes without a passphrase) is refused.
    from twisted_paychan.wallet.sqlite import SqliteWallet

    (tmp_path / "plain").mkdir(mode=0o700)
    SqliteWallet.open(tmp_path / "plain" / "wallet.sqlite", None).close()
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("x\n")
    passphrase.chmod(0o600)
    done = _signer("--data-dir", str(tmp_path / "plain"), "--passphrase-file", str(passphrase))
    assert done.returncode == 1 and "is not encrypted; run `paychan wallet encrypt" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_signer_backend_takes_no_passphrase_file_and_needs_an_endpoint(tmp_path: Path) -> None:
    from twisted_paychan.wallet.backends import WalletArgumentError

    maker = SignerBackendMaker()
    with pytest.raises(WalletArgumentError, match="needs its endpoint: --wallet signer:unix:PATH"):
        maker.check(None)
    with pytest.raises(WalletArgumentError):
        maker.check("tcp:127.0.0.1:1")
    with pytest.raises(WalletUnusable, match="the passphrase goes to `paychan signer`"):
        maker.open(f"unix:{tmp_path / 's.sock'}", str(tmp_path), MemoryChain(task.Clock()), REGTEST,
                   str(tmp_path / "passphrase"), reactor)
