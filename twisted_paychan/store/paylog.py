"""
The payment log: where the channel store makes a payment durable with one small write and one
``fdatasync``, instead of a SQLite transaction.

Why: a payment changes two numbers (the server's b and sig_C, or the client's c), and both sides
must make that change durable before they answer (spec §11). A SQLite commit in WAL mode with
``synchronous=FULL`` costs ~180 µs here; overwriting a few bytes of a file whose blocks are already
allocated and syncing only its data costs ~130 µs, and its CPU is lower. Payments are the hot path;
everything else still goes through SQLite.

The file is a fixed array of 128-byte slots, written once with zeros when created (so a later
write never allocates blocks and ``fdatasync`` has no metadata to flush). Records are appended
slot after slot within a *generation*; the SQLite database remembers the last generation whose
records it has absorbed (``checkpoint``). Recovery reads slots from the start and keeps those of
the next generation with a good checksum, stopping at the first that is not: slots of older
generations further on are stale leftovers, and a torn write fails its checksum. After a
checkpoint the log starts again at slot 0 with a new generation, without touching the file.

Slot layout (little-endian): crc32 of bytes 4..128 (4), generation (8), kind (1), contract txid
(32), value (8, signed), signature length (1), signature (73, zero-padded), padding (1).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Final, Iterator

from twisted_paychan.files import replace_durably

SLOT_SIZE: Final = 128
#: A DER signature is at most 72 bytes, plus the sighash byte.
MAX_SIGNATURE: Final = 73
#: Default capacity: 2 MiB of slots; a full log forces a checkpoint.
DEFAULT_SLOTS: Final = 16384

#: The server's b and sig_C of a channel.
SERVER_PAYMENT: Final = 1
#: The client's c of a channel.
CLIENT_CHANGE: Final = 2

_BODY: Final = struct.Struct("<QB32sqB73sx")
_CRC: Final = struct.Struct("<I")
assert _CRC.size + _BODY.size == SLOT_SIZE


@dataclass(frozen=True)
class LogRecord:
    kind: int
    contract_txid: bytes
    value: int
    signature: bytes


def encode_slot(generation: int, kind: int, contract_txid: bytes, value: int, signature: bytes = b"") -> bytes:
    """One slot; ``signature`` must fit (callers send longer ones through SQLite)."""
    body = _BODY.pack(generation, kind, contract_txid, value, len(signature), signature)
    return _CRC.pack(zlib.crc32(body)) + body


def decode_slots(data: bytes, generation: int) -> Iterator[LogRecord]:
    """The records of ``generation`` at the start of ``data``, up to the first slot that is
    empty, torn, or of another generation."""
    for offset in range(0, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
        (crc,) = _CRC.unpack_from(data, offset)
        body = data[offset + _CRC.size:offset + SLOT_SIZE]
        if zlib.crc32(body) != crc:
            return
        gen, kind, txid, value, sig_len, sig = _BODY.unpack(body)
        if gen != generation or kind not in (SERVER_PAYMENT, CLIENT_CHANGE) or sig_len > MAX_SIGNATURE:
            return
        yield LogRecord(kind, txid, value, sig[:sig_len])


class PaymentLog:
    """The log file of one store. Not thread-safe: the store calls it from one thread."""

    def __init__(self, path: str, slots: int = DEFAULT_SLOTS) -> None:
        self.path = path
        self.slots = slots
        #: Slots used in the current generation.
        self.used = 0
        self._fd = -1

    def open(self, generation: int) -> list[LogRecord]:
        """The records of ``generation`` in the file (those written since the last checkpoint).
        The caller absorbs them, then calls :meth:`prepare` before writing."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            return list(decode_slots(f.read(), generation))  # all of it, whatever its capacity

    def prepare(self) -> None:
        """Open the file for writing, creating it (zero-filled) if it is missing or of another
        capacity. Only after what :meth:`open` returned is safe elsewhere: remaking the file
        drops its records."""
        size = self.slots * SLOT_SIZE
        if not os.path.exists(self.path) or os.path.getsize(self.path) != size:
            self._create(size)
        self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        self.used = 0

    def _create(self, size: int) -> None:
        tmp = self.path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            chunk = b"\0" * min(size, 1 << 20)
            left = size
            while left:
                left -= os.write(fd, chunk[:left])
            os.fsync(fd)
        finally:
            os.close(fd)
        replace_durably(tmp, self.path)

    def room(self, count: int) -> bool:
        """Whether ``count`` more slots fit in this generation."""
        return self.used + count <= self.slots

    def append(self, slots: list[bytes]) -> None:
        """Write ``slots`` after the ones already used and make them durable (raises OSError)."""
        data = b"".join(slots) if len(slots) > 1 else slots[0]
        os.pwrite(self._fd, data, self.used * SLOT_SIZE)
        os.fdatasync(self._fd)
        self.used += len(slots)

    def restart(self) -> None:
        """Everything written so far is checkpointed: start again at slot 0 (new generation)."""
        self.used = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
