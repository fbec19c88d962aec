"""Every channel store passes the same suite: the in-memory double, and SQLite batched per
reactor turn (group commit, the way servers and clients run it) and immediate (the way tools run
it), the latter also with a payment log so small that payments keep forcing checkpoints, and
with none at all, so that every payment is refused or written by the SQL form of the rules; and
PostgreSQL, on a real server the session starts (``postgres_server``), a new database per test."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from store_conformance import CONFORMANCE
from twisted_paychan.store.memory import MemoryChannelStore
from twisted_paychan.store import paylog
from twisted_paychan.store.postgres import PostgresChannelStore
from twisted_paychan.store.sqlite import SqliteChannelStore


@pytest.fixture(params=["memory", "sqlite-batched", "sqlite-inline", "sqlite-tiny-log", "sqlite-no-log", "postgres"])
def make_store(request, tmp_path):
    made = []

    def make():
        if request.param == "memory":
            s = MemoryChannelStore()
        elif request.param == "postgres":
            s = PostgresChannelStore(request.getfixturevalue("postgres").fresh_database(), reactor)
        else:
            batched = request.param == "sqlite-batched"
            slots = {"sqlite-tiny-log": 2, "sqlite-no-log": 0}.get(request.param, paylog.DEFAULT_SLOTS)
            s = SqliteChannelStore(str(tmp_path / "c.sqlite"), reactor if batched else None, log_slots=slots)
        made.append(s)
        return s

    yield make


@pytest.mark.parametrize("check", CONFORMANCE, ids=[c.__name__ for c in CONFORMANCE])
@pytest_twisted.ensureDeferred
async def test_conformance(make_store, check):
    store = make_store()
    try:
        await check(store)
    finally:
        await store.close()
