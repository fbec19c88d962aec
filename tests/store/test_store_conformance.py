"""Every channel store passes the same suite: the in-memory double, and SQLite threaded (group
commit, the way servers run it) and unthreaded (the way tools run it)."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from store_conformance import CONFORMANCE
from twisted_paychan.store.memory import MemoryChannelStore
from twisted_paychan.store.sqlite import SqliteChannelStore


@pytest.fixture(params=["memory", "sqlite-threaded", "sqlite-inline"])
def make_store(request, tmp_path):
    made = []

    def make():
        if request.param == "memory":
            s = MemoryChannelStore()
        else:
            s = SqliteChannelStore(str(tmp_path / "c.sqlite"), reactor, threaded=request.param == "sqlite-threaded")
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
