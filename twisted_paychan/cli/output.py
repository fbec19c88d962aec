"""
What a command prints: a few lines for a person, or one JSON document for a program
(``--json``). Commands build both from the same data and let :class:`Output` choose; errors
are :class:`UserError`, printed without a traceback.
"""

from __future__ import annotations

from typing import Any, TextIO

from twisted_paychan.rpc import jsonenc


class UserError(Exception):
    """Something the person running the command can fix; the message says what."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Output:
    def __init__(self, stdout: TextIO, stderr: TextIO, json_mode: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.json_mode = json_mode

    def emit(self, human: str, data: Any) -> None:
        """``human`` for a person, ``data`` (JSON-able; Decimals allowed) with ``--json``."""
        self.stdout.write((jsonenc.dumps(data) if self.json_mode else human) + "\n")
        self.stdout.flush()

    def error(self, message: str) -> None:
        if self.json_mode:
            self.stdout.write(jsonenc.dumps({"error": message}) + "\n")
            self.stdout.flush()
        self.stderr.write(f"paychan: error: {message}\n")
        self.stderr.flush()


def format_sat(value: int) -> str:
    """``12345 sat (0.00012345 BTC)``"""
    return f"{value} sat ({jsonenc.btc(value):f} BTC)"
