"""
Who may call the API, and how the ``paychan`` command finds a running server.

Every request carries ``Authorization: Bearer <token>``. The token is new at every start and
written to ``DATA_DIR/api.cookie`` (owner-only, like Bitcoin Core's ``.cookie``), unless the
operator gives one with ``--api-token-file``. Beside it the server writes ``DATA_DIR/api.json``:
the URL it actually listens on (a ``tcp:0`` port resolved) and where the token is, so that
``paychan channels`` and friends reach it with no options. Both files go at stop; a crash leaves
them behind, and the command then finds nobody listening and works on the files instead.

The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Optional, Union

from twisted_paychan.files import replace_durably

COOKIE_FILE: Final = "api.cookie"
ENDPOINT_FILE: Final = "api.json"

_Path = Union[str, "os.PathLike[str]"]


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old .tmp may have had other permissions
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    replace_durably(tmp, path)


class Token:
    """The one bearer token the API accepts."""

    def __init__(self, value: str) -> None:
        if not value or any(c.isspace() for c in value):
            raise ValueError("an API token must be non-empty and contain no spaces")
        self._expected = value.encode()

    def check_header(self, header: Optional[bytes]) -> bool:
        """Whether an ``Authorization`` header value grants access."""
        if header is None or not header.startswith(b"Bearer "):
            return False
        return self.check(header[7:].strip())

    def check(self, given: bytes) -> bool:
        return hmac.compare_digest(given, self._expected)

    @property
    def value(self) -> str:
        return self._expected.decode()


def write_cookie(data_dir: _Path) -> tuple[Path, Token]:
    """A fresh token in ``DATA_DIR/api.cookie`` (mode 0600, replaced atomically)."""
    path = Path(data_dir) / COOKIE_FILE
    token = Token(secrets.token_urlsafe(32))
    _write_private(path, token.value + "\n")
    return path, token


def read_token(path: _Path) -> Token:
    """The token in a cookie or ``--api-token-file`` (its first line); OSError if unreadable,
    ValueError if it holds none."""
    text = Path(path).read_text(encoding="utf-8")
    return Token(text.split("\n", 1)[0].strip())


@dataclass(frozen=True)
class Advertised:
    """What ``api.json`` says: where the running server's API is, and its token file."""

    url: str
    token_file: str
    #: With TLS: the certificate file to trust (the server's own, for a self-signed one).
    certificate: Optional[str] = None
    pid: int = 0

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "token_file": self.token_file, "certificate": self.certificate,
                           "pid": self.pid})


def write_advertised(data_dir: _Path, advertised: Advertised) -> Path:
    path = Path(data_dir) / ENDPOINT_FILE
    _write_private(path, advertised.to_json() + "\n")
    return path


def read_advertised(data_dir: _Path) -> Optional[Advertised]:
    """What a running (or crashed) server left in ``DATA_DIR/api.json``; None if nothing."""
    path = Path(data_dir) / ENDPOINT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Advertised(str(data["url"]), str(data["token_file"]),
                          None if data.get("certificate") is None else str(data["certificate"]), int(data.get("pid", 0)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_if(path: Path, content_start: str) -> None:
    """Delete ``path`` if it still holds what we wrote (another server may have replaced it)."""
    try:
        if path.read_text(encoding="utf-8").startswith(content_start):
            path.unlink()
    except OSError:
        pass
