"""
Secrets kept in files: reading them (a passphrase, an RPC password) and keeping the files and
the directories holding them private to their owner.

A secret is given as a file, never as an argument, because every user of the machine can read
a process's argv (``ps``). The file holds the secret on its first line; a trailing newline is
not part of it, so ``echo secret > file`` works.

Permissions follow ssh: a data directory or secret file that group or others can read is
refused (:class:`InsecurePermissions`) unless the operator says otherwise, because a key that
others could have copied is no longer a secret, and it is better to stop than to run on it.
"""

from __future__ import annotations

import os
import stat
from typing import Final, Union

__all__ = ["SecretFileError", "InsecurePermissions", "read_secret_file", "private_directory", "check_private"]

_Path = Union[str, "os.PathLike[str]"]

#: Permission bits a private file or directory must not have: any access by group or others.
_NOT_PRIVATE: Final = stat.S_IRWXG | stat.S_IRWXO


class SecretFileError(ValueError):
    """A secret file cannot be read or holds no secret. The message names the file only."""


class InsecurePermissions(Exception):
    """A directory or file holding secrets is open to group or others."""


def read_secret_file(path: _Path, what: str) -> str:
    """The secret in ``path`` (its first line), for the ``what`` named in messages."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SecretFileError(f"cannot read the {what} file {os.fspath(path)}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"the {what} file {os.fspath(path)} is not UTF-8 text") from None
    secret = text.split("\n", 1)[0].rstrip("\r")
    if not secret:
        raise SecretFileError(f"the {what} file {os.fspath(path)} is empty")
    return secret


def private_directory(path: _Path) -> None:
    """Create ``path`` (and missing parents) owner-only, unless it exists; an existing directory
    keeps its mode, which :func:`check_private` judges."""
    os.makedirs(path, mode=0o700, exist_ok=True)


def check_private(path: _Path, what: str) -> None:
    """Refuse ``path`` if group or others have any access to it (missing paths pass: they will
    be created private)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if mode & _NOT_PRIVATE:
        fix = "700" if stat.S_ISDIR(mode) else "600"
        raise InsecurePermissions(
            f"{what} {os.fspath(path)} is accessible by others (mode {stat.S_IMODE(mode):03o}); "
            f"run `chmod {fix} {os.fspath(path)}`, or pass --allow-insecure-permissions"
        )
