"""
A crash-safe record of the node's active chain.

The kernel writes blocks to its block files at once but flushes its block index and chainstate
databases only now and then, and py-bitcoinkernel has no call to force it: after a SIGKILL the
node can reopen at an earlier height (seen: height 0 after a hundred blocks), forgetting the
contracts and settlements that the channel stores depend on. So every block that joins the
active chain is also appended here, length-prefixed, and fsynced before the call that mined or
submitted it returns; on open, blocks the kernel forgot are handed to it again, in order.

A reorganisation rewrites the file (rare on regtest; atomically, through a temporary file).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

from twisted_paychan.files import replace_durably

_LEN = struct.Struct("<I")


class BlockJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "ab")

    def blocks(self) -> Iterator[bytes]:
        """The journal's blocks in order; a torn last record (crash mid-append) is ignored."""
        with open(self.path, "rb") as f:
            data = f.read()
        offset = 0
        while offset + _LEN.size <= len(data):
            (size,) = _LEN.unpack_from(data, offset)
            start = offset + _LEN.size
            if start + size > len(data):
                break
            yield data[start : start + size]
            offset = start + size

    def append(self, raw_blocks: Iterable[bytes]) -> None:
        wrote = False
        for raw in raw_blocks:
            self._file.write(_LEN.pack(len(raw)) + raw)
            wrote = True
        if wrote:
            self._file.flush()
            os.fsync(self._file.fileno())

    def rewrite(self, raw_blocks: Iterable[bytes]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for raw in raw_blocks:
                f.write(_LEN.pack(len(raw)) + raw)
            f.flush()
            os.fsync(f.fileno())
        self._file.close()
        replace_durably(tmp, self.path)
        self._file = open(self.path, "ab")

    def close(self) -> None:
        self._file.close()
