"""``twistd paychan --reuse-port``: two real server processes, each with its own data directory,
listen on one port; channel handshakes on that port are answered by both (the kernel spreads the
connections), and by the other alone once one stops. A second server on the port without the
option is refused at start in one line."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import threads

from procs import REPO, ServerProcess, _listening, free_port
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.framing import encode_frame
from twisted_paychan.wire.messages import MT, decode_message


def _handshake(port: int) -> None:
    """CLIENT_VERSION, then SERVER_VERSION back; the connection closes after."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(encode_frame(m.client_version(2)))
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = s.recv(65536)
            assert chunk, "the server closed before answering"
            data += chunk
        size = struct.unpack(">I", data[:4])[0]
        assert decode_message(data[4:4 + size]).type == MT.SERVER_VERSION


def _answered(log: Path) -> int:
    return log.read_text().count("connection closed")


def _start(tmp_path: Path, name: str, port: int) -> ServerProcess:
    """A server on the shared ``port``; started once its own API port listens (the shared one
    says nothing: the other server holds it already), which twistd binds in the same step."""
    api = free_port()
    server = ServerProcess(tmp_path / name, "--reuse-port", "--rpc-listen", "none", "--max-handshakes-per-minute",
                           "1000", "--api-listen", f"tcp:{api}:interface=127.0.0.1")
    server.port = port
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
            f"--logfile={server.log}", "paychan", "--data-dir", str(server.data_dir),
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--fee-rate", "1000", *server.extra]
    server.proc = subprocess.Popen(argv, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _listening(api):
        assert server.proc.poll() is None, server.log.read_text()[-2000:]
        assert time.monotonic() < deadline, "the server did not start in 60 s"
        time.sleep(0.05)
    return server


@pytest_twisted.ensureDeferred
async def test_two_servers_share_one_port_and_both_answer(tmp_path):
    port = free_port()
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            servers.append(await threads.deferToThread(_start, tmp_path, name, port))

        def handshakes(n: int) -> None:
            for _ in range(n):
                _handshake(port)

        await threads.deferToThread(handshakes, 24)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(_answered(s.log) for s in servers) < 24:
            await threads.deferToThread(time.sleep, 0.05)
        counts = [_answered(s.log) for s in servers]
        assert sum(counts) == 24 and all(counts), counts
        await servers[0].stop()
        await threads.deferToThread(handshakes, 4)  # b alone now
    finally:
        for server in servers:
            await server.stop()


def test_a_server_without_the_option_is_refused_on_a_shared_port(tmp_path):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
             "--logfile=-", "paychan", "--data-dir", str(tmp_path / "d"), "--api-listen", "none",
             "--rpc-listen", "none", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"cannot listen on --listen tcp:{port}:interface=127.0.0.1" in output, output
    assert "Traceback" not in output
