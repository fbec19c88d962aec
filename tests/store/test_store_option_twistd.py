"""``twistd paychan --store postgresql://...`` as a real process on the session's real PostgreSQL:
a client opens a channel and pays over TCP, the server restarts, the client resumes and pays
more, and a second connection to the database reads what the server acknowledged. A database
that cannot be used stops the start with one line; the password never reaches the log."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest_twisted

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from procs import REPO, RemoteClient, ServerProcess  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings  # noqa: E402

SERVER_ID = hashlib.sha256(b"pg-store-option").digest()
PASSWORD = "s3cret-not-for-logs"


def _schema_url(postgres, password_in_url: bool = False) -> tuple[str, str]:
    """A fresh schema, and the URL that puts it alone on the search path."""
    info = postgres.fresh_database()
    schema = info.rsplit("search_path=", 1)[1].rstrip("'")
    login = f"postgres:{PASSWORD}" if password_in_url else "postgres"
    return schema, f"postgresql://{login}@127.0.0.1:{postgres.port}/postgres?options=-c%20search_path%3D{schema}"


@pytest_twisted.ensureDeferred
async def test_a_server_on_postgresql_keeps_a_channel_across_a_restart(tmp_path, postgres) -> None:
    schema, url = _schema_url(postgres)
    password = tmp_path / "store-password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)  # the trust-auth test server ignores it; it must still stay out of the log
    server = ServerProcess(tmp_path / "server", "--store", url, "--store-password-file", str(password))
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open()
        settings = ClientSettings(channel_value=1_000_000, fee_rate=1000)
        conn = await client.connect(settings, SERVER_ID)
        txid = conn.contract_txid
        acked = 1000
        for _ in range(10):
            acked += (await conn.pay(1000)).amount
        await server.stop()
        assert not (server.data_dir / "channels.sqlite").exists()

        await server.start()
        conn = await client.connect(settings, SERVER_ID)
        assert conn.resumed and conn.contract_txid == txid
        for _ in range(5):
            acked += (await conn.pay(1000)).amount
        await server.stop()

        with psycopg.connect(postgres.conninfo(schema)) as db:
            rows = db.execute("SELECT contract_txid, best_value, state FROM server_channels").fetchall()
        assert len(rows) == 1, rows
        (stored_txid, best_value, state) = rows[0]
        assert bytes(stored_txid) == txid and best_value == acked and state == "open", rows
        log = server.log.read_text()
        assert PASSWORD not in log
        assert "Traceback" not in log
    finally:
        await client.close()
        await server.stop()


def _twistd(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon",
                           "--pidfile=", "--logfile=-", "paychan", "--data-dir", str(tmp_path / "d"),
                           "--api-listen", "tcp:0:interface=127.0.0.1", "--rpc-listen", "none",
                           "--listen", "tcp:0:interface=127.0.0.1", *extra],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_database_refuses_the_start_in_one_line(tmp_path) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{_free_port()}/postgres"
    done = _twistd(tmp_path, "--store", url)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    lines = [line for line in output.splitlines() if "paychan: not starting:" in line]
    assert len(lines) == 1, output
    assert "cannot use the PostgreSQL store at postgresql://postgres:***@127.0.0.1:" in lines[0], output
    assert PASSWORD not in output
    assert "Traceback" not in output


def test_a_database_that_refuses_the_login_refuses_the_start_in_one_line(tmp_path, postgres) -> None:
    url = f"postgresql://nobody@127.0.0.1:{postgres.port}/postgres"
    done = _twistd(tmp_path, "--store", url)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    lines = [line for line in output.splitlines() if "paychan: not starting:" in line]
    assert len(lines) == 1, output
    assert 'role "nobody" does not exist' in lines[0], output
    assert "Traceback" not in output


def test_a_store_password_file_others_can_read_is_refused(tmp_path, postgres) -> None:
    _, url = _schema_url(postgres)
    password = tmp_path / "store-password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o644)
    done = _twistd(tmp_path, "--store", url, "--store-password-file", str(password))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "paychan: not starting:" in output and "--store-password-file" in output, output
    assert "Traceback" not in output
