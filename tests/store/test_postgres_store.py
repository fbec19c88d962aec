"""What the PostgreSQL store promises beyond the conformance suite: an acknowledged payment is in
the database for any other connection, payments asked for together share one commit, the schema
is versioned, two stores on one database (two processes, later two nodes) cannot both win a
compare-and-set, and a restarted database is reconnected to (on a real server,
``postgres_server``)."""

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from store_conformance import server_record
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.store.interfaces import ChannelNotOpen, StoreError, TransitionConflict
from twisted_paychan.store.postgres import PostgresChannelStore, migrations


def _best_values(conninfo):
    """b of every server channel, read by a connection of its own (not the store's)."""
    with psycopg.connect(conninfo) as conn:
        return dict(conn.execute("SELECT contract_txid, best_value FROM server_channels").fetchall())


@pytest_twisted.ensureDeferred
async def test_acknowledged_payment_is_seen_by_another_connection(postgres):
    conninfo = postgres.fresh_database()
    store = PostgresChannelStore(conninfo, reactor)
    try:
        rec = server_record(1)
        await store.add_server_channel(rec)
        seen = []
        d = store.record_payment(rec.contract_txid, 1234, b"sig")
        d.addCallback(lambda _: seen.append(_best_values(conninfo)[rec.contract_txid]))
        await d
        assert seen == [1234]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_payments_of_one_turn_share_one_commit(postgres):
    conninfo = postgres.fresh_database()
    store = PostgresChannelStore(conninfo, reactor)
    try:
        records = [server_record(n) for n in range(1, 9)]
        await defer.gatherResults([store.add_server_channel(r) for r in records])
        commits, writes = store.commits, store.writes
        await defer.gatherResults([store.record_payment(r.contract_txid, 100 + i, b"sig")
                                   for i, r in enumerate(records)])
        assert (store.commits - commits, store.writes - writes) == (1, len(records))
        assert _best_values(conninfo) == {r.contract_txid: 100 + i for i, r in enumerate(records)}
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_schema_is_versioned_and_applied_once(postgres):
    conninfo = postgres.fresh_database()
    for _ in range(2):
        store = PostgresChannelStore(conninfo, reactor)
        await store.ready
        await store.close()
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    assert rows == [(v, name) for v, name, _ in migrations()]
    assert rows[0] == (1, "0001_channels.sql")


@pytest_twisted.ensureDeferred
async def test_newer_schema_is_refused(postgres):
    conninfo = postgres.fresh_database()
    store = PostgresChannelStore(conninfo, reactor)
    await store.ready
    await store.close()
    with psycopg.connect(conninfo) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (999, '0999_future.sql')")
    store = PostgresChannelStore(conninfo, reactor)
    try:
        with pytest.raises(StoreError, match="newer than this program"):
            await store.ready
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_database_restart_fails_writes_then_reconnects(postgres):
    conninfo = postgres.fresh_database()
    store = PostgresChannelStore(conninfo, reactor)
    try:
        rec = server_record(1)
        await store.add_server_channel(rec)
        await store.record_payment(rec.contract_txid, 10, b"sig")
        postgres.stop()
        try:
            with pytest.raises(StoreError, match="PostgreSQL"):
                await store.record_payment(rec.contract_txid, 20, b"sig")
        finally:
            postgres.start()
        await store.record_payment(rec.contract_txid, 30, b"sig")
        assert _best_values(conninfo) == {rec.contract_txid: 30}
        assert (await store.server_channel(rec.contract_txid)).best_value == 30
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_two_stores_on_one_database_one_wins_the_transition(postgres):
    conninfo = postgres.fresh_database()
    a, b = PostgresChannelStore(conninfo, reactor), PostgresChannelStore(conninfo, reactor)
    try:
        rec = server_record(1)
        await a.add_server_channel(rec)
        await a.record_payment(rec.contract_txid, 50, b"sig")
        results = await defer.DeferredList([
            store.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.SETTLING,
                                    settlement_tx=name)
            for store, name in ((a, b"from a"), (b, b"from b"))], consumeErrors=True)
        won = [r for ok, r in results if ok]
        lost = [r for ok, r in results if not ok]
        assert len(won) == 1 and len(lost) == 1
        assert lost[0].check(TransitionConflict)
        stored = await b.server_channel(rec.contract_txid)
        assert stored == won[0] and stored.best_value == 50
        for store in (a, b):
            with pytest.raises(ChannelNotOpen):
                await store.record_payment(rec.contract_txid, 60, b"sig")
    finally:
        await a.close()
        await b.close()
