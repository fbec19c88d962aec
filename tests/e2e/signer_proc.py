"""``paychan signer`` in a child process, for end-to-end tests: started, stopped and started
again on the same data directory; and what its wallet holds, read once it is stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

from twisted.internet import reactor, task, threads

from procs import REPO

PASSPHRASE = "signer passphrase for tests"


class SignerProcess:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.socket = data_dir / "signer" / "signer.sock"
        self.log = data_dir.parent / f"{data_dir.name}-signer.log"
        self.passphrase_file = data_dir.parent / f"{data_dir.name}-passphrase"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def wallet_option(self) -> str:
        return f"signer:unix:{self.socket}"

    async def start(self) -> None:
        if not self.passphrase_file.exists():
            self.passphrase_file.write_text(PASSPHRASE + "\n")
            self.passphrase_file.chmod(0o600)
        argv = [sys.executable, "-m", "twisted_paychan.cli", "signer", "--data-dir", str(self.data_dir),
                "--passphrase-file", str(self.passphrase_file), *self.extra]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signer exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if _answers(self.socket):
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        raise RuntimeError("the signer did not start in 60 s")

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            await threads.deferToThread(self.proc.wait, 30)

    def secrets(self) -> list[bytes]:
        """Every private key and the seed of the signer's wallet (the signer must be stopped)."""
        from twisted_paychan.wallet.sqlite import SqliteWallet

        wallet = SqliteWallet.open(self.data_dir / "wallet.sqlite", None, passphrase=PASSPHRASE)
        try:
            out = [k.secret for k in wallet._keys.values()]
            assert wallet._seed is not None
            out += [wallet._seed.entropy, wallet._seed.mnemonic().encode()]
            out += [secret for secret, _, _ in wallet._seed._branches.values()]
            return out
        finally:
            wallet.close()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


async def api_get(data_dir: Path, path: str, body: Optional[dict[str, Any]] = None) -> tuple[int, bytes]:
    """GET ``path`` from the running server's API (found through DATA_DIR/api.json); POST
    ``body`` as JSON when one is given."""
    advertised = json.loads((data_dir / "api.json").read_text())
    token = Path(advertised["token_file"]).read_text().strip()

    def get() -> tuple[int, bytes]:
        request = urllib.request.Request(advertised["url"].rstrip("/") + path,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    result: Any = await threads.deferToThread(get)
    return result
