"""Real processes for end-to-end tests: ``twistd paychan`` servers on loopback that a test can
start, SIGKILL and restart on the same data directory, and a client in the test process that
shares the server's embedded chain over JSON-RPC."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from twisted.internet import defer, reactor, task

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``twistd -n paychan`` in a child process."""

    def __init__(self, data_dir: Path, *extra: str, env: Optional[dict] = None) -> None:
        self.env = env or {}
        self.data_dir = data_dir
        self.port = free_port()
        self.rpc_port = free_port()
        self.extra = extra
        self.proc: Optional[subprocess.Popen] = None
        self.log = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def cookie(self) -> Path:
        return self.data_dir / "chain" / ".cookie"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def endpoint(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    async def start(self) -> None:
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", f"--logfile={self.log}", "paychan",
            "--data-dir", str(self.data_dir),
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--rpc-listen", f"tcp:{self.rpc_port}:interface=127.0.0.1",
            "--fee-rate", "1000", "--api-listen", "tcp:0:interface=127.0.0.1", *self.extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.proc.returncode == -9:
                    return  # a crash point fired while we waited
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if self.cookie.exists() and _listening(self.port) and _listening(self.rpc_port):
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        raise RuntimeError("server did not start in 30 s")

    async def crashed(self) -> bool:
        """Whether the process died by SIGKILL (waiting a little for the kernel to reap it)."""
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.02, lambda: None)
        return self.proc.poll() == -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while self.proc.poll() is None and time.monotonic() < deadline:
                await task.deferLater(reactor, 0.05, lambda: None)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def server_channels(data_dir: Path) -> list[Any]:
    """The server's stored channels (the server must be stopped: the store is exclusive)."""
    from twisted_paychan.store.sqlite import open_store

    store = open_store(str(data_dir))
    try:
        return await store.server_channels()
    finally:
        await store.close()


class RemoteClient:
    """A client in the test process on the server's chain (over RPC), durable on disk."""

    def __init__(self, tmp: Path, server: ServerProcess) -> None:
        self.tmp = tmp
        self.server = server
        self.chain: Any = None
        self.wallet: Any = None
        self.store: Any = None

    async def open(self, fund_blocks: int = 1) -> None:
        from twisted_paychan.chain.rpc.chain import RpcChain
        from twisted_paychan.store.sqlite import SqliteChannelStore
        from twisted_paychan.wallet.sqlite import SqliteWallet

        self.chain = RpcChain.from_url(reactor, self.server.rpc_url, cookie_path=self.server.cookie,
                                       poll_interval=0.2)
        await self.chain.start()
        fresh = not (self.tmp / "client-wallet.sqlite").exists()
        self.wallet = SqliteWallet.open(self.tmp / "client-wallet.sqlite", self.chain)
        self.store = SqliteChannelStore(str(self.tmp / "client-channels.sqlite"), reactor)
        if fresh:
            address = await self.wallet.new_address()
            await self.chain.connection.call("generatetoaddress", fund_blocks, address)
            burn = await self.wallet.new_address()  # mature the coinbase
            await self.chain.connection.call("generatetoaddress", 100, burn)

    def connect(self, settings: Any, server_id: bytes) -> defer.Deferred:
        from twisted.internet.endpoints import clientFromString

        from twisted_paychan.net.client import connect

        return connect(reactor, clientFromString(reactor, self.server.endpoint), self.wallet, self.chain,
                       self.store, settings, server_id, None)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
        if self.wallet is not None:
            self.wallet.close()
        if self.chain is not None:
            await self.chain.stop()
