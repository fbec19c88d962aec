"""Every ``python`` block of the user documentation is a whole program that runs as written
(doc/channels.md says so): each is run here, in a fresh process, and must exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["doc/channels.md", "doc/handlers.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall((REPO / doc).read_text())):
            found.append((f"{doc}#{i + 1}", code))
    return found


def test_the_docs_have_examples() -> None:
    assert len(blocks()) >= 4


@pytest.mark.parametrize("name, code", blocks(), ids=[name for name, _ in blocks()])
def test_the_example_runs_as_written(name: str, code: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


def test_the_tcp_example_shows_the_handler_order() -> None:
    """doc/channels.md's level-3 program: opened, the initial payment, the payment, closed by name."""
    [(_, code)] = [(n, c) for n, c in blocks() if "PaymentChannelServerFactory(" in c]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    heard = [line.split()[0] for line in done.stdout.splitlines() if line.split()[0] in
             ("opened", "payment", "closed")]
    assert heard == ["opened", "payment", "payment", "closed"], done.stdout
    assert "closed CLIENT_REQUESTED_CLOSE" in done.stdout and "ack 2000 b'thanks'" in done.stdout
