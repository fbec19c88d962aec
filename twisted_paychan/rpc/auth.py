"""
Who may call the RPC server: Bitcoin Core's two ways.

* **Cookie** (the default): at start the server writes ``__cookie__:<64 random hex digits>`` to
  ``.cookie`` in the data directory, readable by its owner only, and removes it at stop; a
  client on the same machine reads the file and sends its content as basic-auth credentials.
  The password is new at every start.
* **Configured user and password** (``-rpcuser``/``-rpcpassword``): no cookie is written.

A request without an ``Authorization: Basic`` header carrying the right ``user:password`` gets
HTTP 401 and ``WWW-Authenticate: Basic realm="jsonrpc"``. The comparison takes the same time
whatever the password (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from pathlib import Path
from typing import Final, Optional, Union

from twisted.logger import Logger

log = Logger()

COOKIE_FILE: Final = ".cookie"
COOKIE_USER: Final = "__cookie__"
WWW_AUTHENTICATE: Final = 'Basic realm="jsonrpc"'


class Credentials:
    """The one ``user:password`` the server accepts."""

    def __init__(self, user: str, password: str) -> None:
        if ":" in user:
            raise ValueError("an RPC user name cannot contain ':'")
        if not password:
            raise ValueError("an empty RPC password is not allowed")
        self.user = user
        self.password = password
        self._expected = f"{user}:{password}".encode()

    def check_header(self, header: Optional[bytes]) -> bool:
        """Whether an ``Authorization`` header value grants access."""
        if header is None or not header.startswith(b"Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)

    def header(self) -> bytes:
        """The ``Authorization`` header value a client sends."""
        return b"Basic " + base64.b64encode(self._expected)


class Cookie:
    """A cookie file we wrote; :meth:`remove` deletes it if it is still ours."""

    def __init__(self, path: Path, credentials: Credentials) -> None:
        self.path = path
        self.credentials = credentials

    @classmethod
    def write(cls, directory: Union[str, Path]) -> "Cookie":
        """Generate a password and write ``directory/.cookie`` (mode 0600, atomically)."""
        path = Path(directory) / COOKIE_FILE
        credentials = Credentials(COOKIE_USER, secrets.token_hex(32))
        tmp = path.with_name(COOKIE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an old .tmp may have had other permissions
            os.write(fd, f"{credentials.user}:{credentials.password}".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        log.info("RPC cookie written to {path}", path=str(path))
        return cls(path, credentials)

    def remove(self) -> None:
        try:
            if read_cookie(self.path).password == self.credentials.password:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def read_cookie(path: Union[str, Path]) -> Credentials:
    """The credentials in a cookie file (ours or bitcoind's); OSError if it cannot be read,
    ValueError if it holds no ``user:password``."""
    text = Path(path).read_text().strip()
    user, sep, password = text.partition(":")
    if not sep or not password:
        raise ValueError(f"{path} is not an RPC cookie file")
    return Credentials(user, password)
