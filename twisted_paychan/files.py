"""
Durable file replacement, for the files the crash tests depend on (the node's block journal, the
channel store's payment log).

``os.replace`` is atomic, but the new name is only durable once the directory holding it is
synced too: without that, a crash right after the rename may bring back the old file.
"""

from __future__ import annotations

import os
from typing import Union

_Path = Union[str, "os.PathLike[str]"]


def sync_file(path: _Path) -> None:
    """Make a file already written and closed durable (its data and size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: _Path, path: _Path) -> None:
    """Rename ``tmp`` (already written and synced by the caller) over ``path`` and sync the
    directory, so that after a crash ``path`` is the new file."""
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
