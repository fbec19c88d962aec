"""Runs the IChain conformance suite (``chain_conformance``) on every backend we ship."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from chain_backends import FACTORIES, Backend
from chain_conformance import *  # noqa: F401,F403  (the suite's test functions)

#: Backends under test; a new one needs a factory in chain_backends.FACTORIES and its name here.
BACKENDS = ["memory", "embedded"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()
