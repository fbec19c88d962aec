"""The cluster's rules on the real PostgreSQL (``postgres_server``), each node a store of its own
on one database: fencing tokens (``store.ownership``: a claim takes a channel over, the old
holder's next write fails and nothing of it is stored; a stale claim is refused), expiry duty
(``net.duty``, its timers on ``task.Clock``: a new channel's duty is its creator's, a dead
node's is claimed by exactly one live node, a node cut off from the database lets its duties
go once its lease has run out), a settlement another node stored first is never replaced (two
managers settling one channel at once answer with the one stored), and channel keys every node
derives (``wallet.shared_keys``)."""

from __future__ import annotations

from typing import Optional

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from store_conformance import server_record
from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.net.duty import DutyRoster
from twisted_paychan.store.interfaces import ChannelNotOpen, StoreError, TransitionConflict
from twisted_paychan.store.ownership import FencedOwnership, OwnershipLost, SettlementStoredElsewhere
from twisted_paychan.store.postgres import PostgresChannelStore
from twisted_paychan.wallet.hd import Seed
from twisted_paychan.wallet.memory import MemoryWallet
from twisted_paychan.wallet.shared_keys import CLUSTER_BASE, SharedChannelKeys, seed_fingerprint


class Holder:
    """A connection, as ownership sees one."""

    def __init__(self) -> None:
        self.close_reason: Optional[str] = None

    def close(self) -> None:
        self.close_reason = "closed"


class Manager:
    """The manager's duty calls, recorded."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.dropped: list[bytes] = []

    def has_duty(self, record: object) -> bool:
        return True

    def take_duty(self, txid: bytes) -> defer.Deferred[None]:
        self.taken.append(txid)
        return defer.succeed(None)

    def drop_duty(self, txid: bytes) -> None:
        self.dropped.append(txid)


def _row(conninfo: str, txid: bytes) -> tuple:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT best_value, owner_token, owner_node, duty_node FROM server_channels "
                           "WHERE contract_txid = %s", (txid,)).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def nodes(postgres):
    """Two nodes' stores on one fresh database, closed after."""
    conninfo = postgres.fresh_database()
    stores = [PostgresChannelStore(conninfo, reactor, node) for node in ("a", "b")]
    yield conninfo, stores
    for store in stores:
        if not store._closing:
            pytest_twisted.blockon(store.close())


@pytest_twisted.ensureDeferred
async def test_a_claim_on_another_node_fences_the_old_holder_out(nodes):
    conninfo, (store_a, store_b) = nodes
    a, b = FencedOwnership(store_a, "a"), FencedOwnership(store_b, "b")
    rec = server_record(1, best_value=1000)
    await store_a.add_server_channel(rec)
    txid = rec.contract_txid
    on_a, on_b = Holder(), Holder()

    a.attached(txid, on_a, 1000)
    await a.record_payment(txid, on_a, 2000, b"sig-a1")  # A claims
    await a.record_payment(txid, on_a, 3000, b"sig-a2")  # and writes fenced
    assert _row(conninfo, txid)[:3] == (3000, 1, "a")

    b.attached(txid, on_b, 3000)  # the client resumed on B, told b = 3000
    await b.record_payment(txid, on_b, 4000, b"sig-b1")
    assert _row(conninfo, txid)[:3] == (4000, 2, "b")

    with pytest.raises(OwnershipLost, match="taken over by a connection on node b"):
        await a.record_payment(txid, on_a, 5000, b"sig-a3")
    assert isinstance(OwnershipLost(txid, "b"), ChannelNotOpen)  # the connection's BAD_TRANSACTION path
    assert _row(conninfo, txid)[0] == 4000  # nothing of A's stored after B's claim

    assert await a.check_held() == 1 and on_a.close_reason is not None
    assert await b.check_held() == 0 and on_b.close_reason is None
    await b.record_payment(txid, on_b, 5000, b"sig-b2")
    assert _row(conninfo, txid)[0] == 5000


@pytest_twisted.ensureDeferred
async def test_a_stale_claim_is_refused_and_the_holder_keeps_paying(nodes):
    conninfo, (store_a, store_b) = nodes
    a, b = FencedOwnership(store_a, "a"), FencedOwnership(store_b, "b")
    rec = server_record(2, best_value=1000)
    await store_a.add_server_channel(rec)
    txid = rec.contract_txid
    on_a, on_b = Holder(), Holder()
    a.attached(txid, on_a, 1000)
    b.attached(txid, on_b, 1000)  # both resumed at once, both told 1000
    results = await defer.DeferredList([a.record_payment(txid, on_a, 2000, b"a"),
                                        b.record_payment(txid, on_b, 2000, b"b")], consumeErrors=True)
    won = [ok for ok, _ in results]
    assert won.count(True) == 1, results
    loser = results[won.index(False)][1]
    assert loser.check(StoreError) and "since this one resumed at 1000" in loser.getErrorMessage()
    winner, holder, value = (a, on_a, 2000) if won[0] else (b, on_b, 2000)
    assert _row(conninfo, txid)[0] == value
    await winner.record_payment(txid, holder, value + 1, b"again")
    assert _row(conninfo, txid)[0] == value + 1


@pytest_twisted.ensureDeferred
async def test_payments_pipelined_behind_a_claim_are_stored_in_order(nodes):
    conninfo, (store_a, _) = nodes
    a = FencedOwnership(store_a, "a")
    rec = server_record(3, best_value=1000)
    await store_a.add_server_channel(rec)
    on_a = Holder()
    a.attached(rec.contract_txid, on_a, 1000)
    await defer.gatherResults([a.record_payment(rec.contract_txid, on_a, 1000 + n, b"s") for n in range(1, 6)])
    assert _row(conninfo, rec.contract_txid)[:2] == (1005, 1)


@pytest_twisted.ensureDeferred
async def test_a_refused_claim_on_a_settling_channel_says_so(nodes):
    _, (store_a, _) = nodes
    a = FencedOwnership(store_a, "a")
    rec = server_record(4, best_value=1000)
    await store_a.add_server_channel(rec)
    await store_a.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.SETTLING,
                                    settlement_tx=b"tx")
    on_a = Holder()
    a.attached(rec.contract_txid, on_a, 1000)
    with pytest.raises(ChannelNotOpen):
        await a.record_payment(rec.contract_txid, on_a, 2000, b"s")


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_duty_goes_to_exactly_one_live_node(nodes, postgres):
    conninfo, (store_a, store_b) = nodes
    store_c = PostgresChannelStore(conninfo, reactor, "c")
    try:
        rec = server_record(5)
        await store_a.add_server_channel(rec)  # stored by A: A's duty
        txid = rec.contract_txid
        assert _row(conninfo, txid)[3] == "a"
        clocks = [task.Clock() for _ in range(3)]
        managers = [Manager() for _ in range(3)]
        rosters = [DutyRoster(s, m, c, n, takeover=30) for s, m, c, n
                   in zip((store_a, store_b, store_c), managers, clocks, "abc")]
        for roster in rosters:
            await roster.start()
        assert [r.duties for r in rosters] == [{txid}, set(), set()]

        rosters[0].stop()  # A dies: it renews no more; its lease runs out (the database's clock)
        with psycopg.connect(conninfo) as conn:
            conn.execute("UPDATE cluster_nodes SET lease_until = now() - interval '1 second' WHERE node_id = 'a'")
        for clock in clocks[1:]:
            clock.advance(rosters[1].interval)  # B and C renew in the same turn: one transaction each
        await defer.gatherResults([r._renewing for r in rosters[1:] if r._renewing is not None])
        owners = [r.duties for r in rosters[1:]]
        assert sorted(map(len, owners)) == [0, 1], owners
        heir = "b" if owners[0] else "c"
        assert _row(conninfo, txid)[3] == heir
        assert [m.taken for m in managers[1:]] == ([[txid], []] if heir == "b" else [[], [txid]])
    finally:
        await store_c.close()


@pytest_twisted.ensureDeferred
async def test_a_node_cut_off_from_the_database_lets_its_duties_go_when_its_lease_runs_out(nodes):
    conninfo, (store_a, _) = nodes
    rec = server_record(6)
    await store_a.add_server_channel(rec)
    clock, manager = task.Clock(), Manager()
    roster = DutyRoster(store_a, manager, clock, "a", takeover=30)
    await roster.start()
    assert roster.duties == {rec.contract_txid} and roster.lease == 20
    await store_a.close()  # every renewal fails from now on
    clock.advance(roster.interval)  # 10 s: a renewal fails, the lease (20 s) still holds
    assert manager.dropped == [] and roster.duties
    clock.advance(roster.interval)  # 20 s: run out
    assert manager.dropped == [rec.contract_txid] and roster.duties == set()
    roster.stop()


@pytest_twisted.ensureDeferred
async def test_channel_keys_come_from_one_sequence_and_any_node_derives_them(nodes):
    conninfo, (store_a, store_b) = nodes
    words = Seed.generate(REGTEST).mnemonic()
    wallets = [MemoryWallet(None, REGTEST, mnemonic=words) for _ in range(2)]  # the same words, two nodes
    assert seed_fingerprint(wallets[0]) == seed_fingerprint(wallets[1])
    keys_a, keys_b = SharedChannelKeys(wallets[0], store_a, "a"), SharedChannelKeys(wallets[1], store_b, "b")
    lent = await defer.gatherResults([keys_a.provisional_channel_key(), keys_b.provisional_channel_key(),
                                      keys_a.provisional_channel_key()])
    assert len({s.public_key for s in lent}) == 3
    keys_a.keep_channel_key(lent[0].public_key)
    rec = server_record(7, server_key=lent[0].public_key)
    await store_a.add_server_channel(rec)
    with psycopg.connect(conninfo) as conn:
        paths = dict(conn.execute("SELECT public_key, path FROM channel_keys").fetchall())
        assert "secret" not in str(conn.execute("SELECT * FROM channel_keys").fetchall())
    assert sorted(int(p.rsplit("/", 1)[1]) for p in paths.values()) == [CLUSTER_BASE + n for n in (1, 2, 3)]
    with pytest.raises(KeyError):
        keys_b.signer_for(lent[0].public_key)  # B has not met it
    await keys_b.settlement_payout_script(rec.contract_txid)  # what the manager asks before signing
    digest = bytes(32)
    assert keys_b.signer_for(lent[0].public_key).sign(digest) == lent[0].sign(digest)


@pytest_twisted.ensureDeferred
async def test_a_second_nodes_settlement_never_replaces_the_first_stored(nodes):
    conninfo, (store_a, store_b) = nodes
    a, b = FencedOwnership(store_a, "a"), FencedOwnership(store_b, "b")
    rec = server_record(8, best_value=5000, best_signature=b"sig")
    await store_a.add_server_channel(rec)
    txid, S = rec.contract_txid, ServerChannelState
    await store_a.transition_server(txid, S.OPEN, S.SETTLING, note="settling")  # frozen once
    # Both nodes built a settlement on the frozen record (none stored yet): the first stands.
    stored = await a.store_settlement(txid, S.SETTLING, S.SETTLING, {"settlement_tx": b"tx-a", "note": ""}, None)
    assert stored.settlement_tx == b"tx-a"
    with pytest.raises(SettlementStoredElsewhere):
        await b.store_settlement(txid, S.SETTLING, S.SETTLING, {"settlement_tx": b"tx-b", "note": ""}, None)
    assert (await store_b.server_channel(txid)).settlement_tx == b"tx-a"
    # A fee bump replaces the one it was built on.
    bumped = await a.store_settlement(txid, S.SETTLING, S.SETTLING, {"settlement_tx": b"tx-a2", "note": ""}, b"tx-a")
    assert bumped.settlement_tx == b"tx-a2"
    with pytest.raises(TransitionConflict):
        await b.store_settlement(txid, S.OPEN, S.SETTLING, {"settlement_tx": b"tx-b", "note": ""}, None)


@pytest_twisted.ensureDeferred
async def test_two_nodes_settling_one_channel_at_once_broadcast_one_settlement(nodes):
    """Two managers (two nodes, each its own fee rate, so their settlements would differ) settle
    one channel at once: one freezes it and stores its settlement; the other adopts the stored
    one, and both answer with it (with the store's plain compare-and-set alone, the second
    overwrote the first and the node refused it as a conflicting spend)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channel"))
    from channel_pair import Pair, result_of
    from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
    from twisted_paychan.net.server_manager import ServerChannelManager

    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    paid = client.pay(50_000)
    pair.pump()
    result_of(paid)
    client.disconnect()
    pair.pump()
    record = result_of(pair.server_store.server_channel(txid))
    _, (store_a, store_b) = nodes
    await store_a.add_server_channel(record)
    managers = []
    for store, node, rate in ((store_a, "a", 1000), (store_b, "b", 3000)):
        manager = ServerChannelManager(pair.server_wallet, pair.chain, store, ServerSettings(fee_rate=rate), pair.clock)
        manager.ownership = FencedOwnership(store, node)
        managers.append(manager)
    settled = await defer.gatherResults([m.settle(txid) for m in managers])
    stored = await store_a.server_channel(txid)
    assert stored.state is ServerChannelState.SETTLING and stored.settlement_tx is not None
    assert settled == [stored.settlement_tx, stored.settlement_tx]
    from twisted_paychan.bitcoin.txid import txid as tx_id

    assert [t for t in pair.chain.mempool if t != txid] == [tx_id(stored.settlement_tx)]  # one spend of it
    for m in managers:
        m.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_that_stops_cleanly_gives_its_duties_back_at_once(nodes):
    conninfo, (store_a, store_b) = nodes
    rec = server_record(9)
    await store_a.add_server_channel(rec)
    managers = [Manager(), Manager()]
    rosters = [DutyRoster(s, m, task.Clock(), n, takeover=30) for s, m, n in zip((store_a, store_b), managers, "ab")]
    for roster in rosters:
        await roster.start()
    assert rosters[0].duties == {rec.contract_txid}
    await rosters[0].release()
    await rosters[1].renew()  # its next renewal, not 30 s later
    assert rosters[1].duties == {rec.contract_txid} and managers[1].taken == [rec.contract_txid]
    rosters[1].stop()
