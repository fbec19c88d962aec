"""
One process owns a node's data directory.

The kernel's LevelDB lock already refuses a second ChainstateManager, but only with "Failed to
create ChainstateManager". We take an advisory ``flock`` on ``paychan.lock`` first so the
refusal names the directory and the owning process. ``flock`` locks belong to an open file
description, so a second node in the *same* process is refused too.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

LOCK_FILE = "paychan.lock"


class DatadirInUse(RuntimeError):
    """Another node (in this or another process) holds the data directory."""

    def __init__(self, path: Path, owner: Optional[int]) -> None:
        who = f"process {owner}" if owner else "another process"
        super().__init__(f"data directory {path} is in use by {who}; a data directory belongs to one node")
        self.path = path
        self.owner = owner


class DatadirLock:
    """An exclusive lock on ``path``, created if needed, held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds the RPC cookie
        lock_path = self.path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(lock_path)
            os.close(fd)
            raise DatadirInUse(self.path, owner) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_pid(lock_path: Path) -> Optional[int]:
    try:
        return int(lock_path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None
