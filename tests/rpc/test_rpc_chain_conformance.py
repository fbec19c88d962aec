"""The IChain conformance suite (tests/chain/chain_conformance.py) run on RpcChain, against the
embedded node's JSON-RPC server over real HTTP on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest_twisted

from rpc_harness import start_harness
from chain_backends import Backend
from chain_conformance import *  # noqa: F401,F403  (the suite's test functions)


@pytest_twisted.async_yield_fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    harness = await start_harness(tmp_path)
    try:
        yield harness.backend
    finally:
        await harness.close()
