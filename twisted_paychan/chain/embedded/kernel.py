"""
The kernel's ChainstateManager behind a small, safe surface.

Three sharp edges of py-bitcoinkernel are handled here and nowhere else:

* ``process_block``'s return value does not say whether a block was accepted (a block failing
  script checks is stored, returns True, and leaves the tip alone; context failures raise).
  :meth:`Kernel.process_block` judges by the active chain and returns a :class:`BlockVerdict`.
* Human-readable reasons exist only in the kernel log, which is process-global. One
  ``LoggingConnection`` per process feeds :class:`_LogRouter`, which hands the lines logged
  during a call to whoever made it (calls are synchronous, on the reactor thread).
* Validation callbacks are invoked from C through ctypes, which prints and swallows Python
  exceptions. The callbacks here catch everything and re-raise after the kernel call returns.

Blocks are connected and disconnected through ``on_connected(raw_block, height)`` and
``on_disconnected(raw_block, height, spent)``, ``spent`` being the kernel's undo data: for each
non-coinbase transaction of the block, the coins its inputs spent.

``process_block`` runs synchronously: about 0.1 ms for an empty block, tens of ms for a block
of hundreds of transactions. A worker thread would need the callbacks marshalled back with
``callFromThread``; not needed at regtest sizes.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pbk
from twisted.logger import Logger

from twisted_paychan import logs

log = Logger()


@dataclass(frozen=True)
class SpentCoin:
    """One coin from the kernel's undo data."""

    value: int
    script_pubkey: bytes
    height: int
    coinbase: bool


@dataclass(frozen=True)
class BlockVerdict:
    #: The block is now the tip of the active chain.
    accepted: bool
    #: Bitcoin Core's reject reason (``bad-txns-nonfinal``, ``time-too-new``, ...), or as
    #: ``submitblock`` words it: ``duplicate`` (already on the active chain),
    #: ``duplicate-invalid``, ``inconclusive`` (stored on a side branch); "" if accepted.
    reason: str = ""
    #: The block was stored but is not on the active chain (a valid side branch, or one
    #: that failed when the kernel tried to connect it).
    stored: bool = False


class _LogRouter:
    """The process-wide kernel log, handed to the caller of the current kernel call."""

    _lock = threading.Lock()
    _instance: Optional["_LogRouter"] = None

    def __init__(self) -> None:
        self._local = threading.local()
        self._connection = pbk.LoggingConnection(self._receive)

    @classmethod
    def get(cls) -> "_LogRouter":
        with cls._lock:
            if cls._instance is None:
                cls._instance = _LogRouter()
            return cls._instance

    def _receive(self, message: str) -> None:
        sink: Optional[list[str]] = getattr(self._local, "sink", None)
        if sink is not None:
            sink.append(message)

    def capture(self) -> "_Capture":
        return _Capture(self._local)


class _Capture:
    def __init__(self, local: threading.local) -> None:
        self._local = local
        self.lines: list[str] = []

    def __enter__(self) -> "_Capture":
        self._outer = getattr(self._local, "sink", None)
        self._local.sink = self.lines
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.sink = self._outer
        if self._outer is not None:
            self._outer.extend(self.lines)


# Where the kernel words a rejection, most specific first: "AcceptBlock FAILED (reason, ...)",
# "Block validation error: reason (detail), ...", "[error] AcceptBlock: reason, ...",
# "ConnectBlock <hash> failed, reason (detail)".
_FAILED = re.compile(r"FAILED \(([^,)]+)")
_VALIDATION_ERROR = re.compile(r"Block validation error: ([a-z0-9-]+(?: \([^)]*\))?)")
_ERROR_REASON = re.compile(r"\[error\] \w+: ([a-z0-9-]+)[,:]")
_CONNECT_FAILED = re.compile(r"ConnectBlock \w+ failed, ([a-z0-9-]+(?: \([^)]*\))?)")


def reject_reason(lines: list[str]) -> str:
    """Bitcoin Core's reject reason from log lines, the most specific one found."""
    for pattern in (_FAILED, _VALIDATION_ERROR, _ERROR_REASON, _CONNECT_FAILED):
        for line in lines:
            match = pattern.search(line)
            if match:
                return match.group(1).strip()
    errors = [line.split("[error]", 1)[1].strip() for line in lines if "[error]" in line]
    return errors[0] if errors else ""


class Kernel:
    """A regtest ChainstateManager on ``datadir`` (on-disk databases, no worker threads)."""

    def __init__(
        self,
        datadir: Path,
        on_connected: Callable[[bytes, int], None],
        on_disconnected: Callable[[bytes, int, list[list[SpentCoin]]], None],
    ) -> None:
        self._router = _LogRouter.get()
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._errors: list[BaseException] = []
        self._checked: list[Any] = []
        self._loading = True
        self._callbacks = pbk.ValidationInterfaceCallbacks(
            block_connected=self._connected,
            block_disconnected=self._disconnected,
            block_checked=self._block_checked,
        )
        self._context = pbk.make_context(pbk.ChainType.REGTEST, validation_callbacks=self._callbacks)
        options = pbk.ChainstateManagerOptions(self._context, str(datadir), str(datadir / "blocks"))
        options.set_worker_threads_num(0)
        with self._router.capture() as capture:
            try:
                self._chainman: Optional[pbk.ChainstateManager] = pbk.ChainstateManager(options)
            except RuntimeError as e:
                raise RuntimeError(f"the kernel could not open {datadir}: {e}; log: {''.join(capture.lines[-5:])}") from e
        self._loading = False
        self._raise_callback_errors()

    # -- callbacks (from C) ----------------------------------------------------------------

    def _connected(self, user_data: object, block: "pbk.Block", entry: "pbk.BlockTreeEntry") -> None:
        if self._loading:
            return  # the node rebuilds its indexes from stored blocks after opening
        try:
            self._on_connected(bytes(block), entry.height)
        except BaseException as e:  # ctypes would swallow it
            self._errors.append(e)

    def _disconnected(self, user_data: object, block: "pbk.Block", entry: "pbk.BlockTreeEntry") -> None:
        try:
            self._on_disconnected(bytes(block), entry.height, self._spent(entry))
        except BaseException as e:
            self._errors.append(e)

    def _block_checked(self, user_data: object, block: "pbk.Block", state: "pbk.BlockValidationState") -> None:
        try:
            self._checked.append((state.validation_mode, state.block_validation_result))
        except BaseException as e:
            self._errors.append(e)

    def _raise_callback_errors(self) -> None:
        if self._errors:
            first, self._errors = self._errors[0], []
            raise first

    # -- reading ---------------------------------------------------------------------------

    @property
    def chainman(self) -> "pbk.ChainstateManager":
        if self._chainman is None:
            raise RuntimeError("the node is closed")
        return self._chainman

    @property
    def height(self) -> int:
        return int(self.chainman.get_active_chain().height)

    def _entry(self, height: int) -> "pbk.BlockTreeEntry":
        if not 0 <= height <= self.height:
            raise IndexError(f"no block at height {height} (tip is {self.height})")
        return self.chainman.get_active_chain().block_tree_entries[height]

    def block_hash_at(self, height: int) -> bytes:
        return bytes(self._entry(height).block_hash)

    def block_at(self, height: int) -> bytes:
        return bytes(self.chainman.blocks[self._entry(height)])

    def _on_active_chain(self, block_hash: bytes) -> bool:
        entries = self.chainman.block_tree_entries
        key = pbk.BlockHash(block_hash)
        return key in entries and entries[key] in self.chainman.get_active_chain().block_tree_entries

    def _spent(self, entry: "pbk.BlockTreeEntry") -> list[list[SpentCoin]]:
        if entry.height == 0:
            return []
        undo = self.chainman.block_spent_outputs[entry]
        return [
            [
                SpentCoin(
                    int(coin.output.amount),
                    bytes(coin.output.script_pubkey),
                    int(coin.confirmation_height),
                    bool(coin.is_coinbase),
                )
                for coin in tx_undo.coins
            ]
            for tx_undo in undo.transactions
        ]

    # -- writing ---------------------------------------------------------------------------

    def process_block(self, raw_block: bytes, block_hash: bytes) -> BlockVerdict:
        """Hand a block to the kernel; accepted means it is now the active tip."""
        self._checked.clear()
        with self._router.capture() as capture:
            try:
                pbk_block = pbk.Block(raw_block)
            except RuntimeError:
                return BlockVerdict(False, "block decode failed")
            try:
                is_new = self.chainman.process_block(pbk_block)
                raised = False
            except pbk.ProcessBlockException:
                is_new, raised = False, True
        self._raise_callback_errors()
        if logs.verbose:  # the kernel's own lines, several per block: only when asked for
            for line in capture.lines:
                log.debug("kernel: {line}", line=line.rstrip())
        if is_new and self.block_hash_at(self.height) == block_hash:
            return BlockVerdict(True)
        if not raised and self._on_active_chain(block_hash):
            return BlockVerdict(False, "duplicate", stored=True)  # submitblock's word for it
        reason = reject_reason(capture.lines)
        if not reason and self._checked:
            mode, result = self._checked[-1]
            if mode != pbk.ValidationMode.VALID:
                reason = result.name.lower()
        if not reason and raised:
            known = pbk.BlockHash(block_hash) in self.chainman.block_tree_entries
            reason = "duplicate-invalid" if known else "rejected"
        if not reason:
            reason = "inconclusive"  # stored on a side branch with no more work than the tip
        return BlockVerdict(False, reason, stored=not raised)

    def close(self) -> None:
        """Destroy the ChainstateManager now (it flushes to disk and drops its LevelDB locks),
        rather than whenever the garbage collector gets to it."""
        chainman, self._chainman = self._chainman, None
        if chainman is not None:
            chainman.__exit__(None, None, None)
