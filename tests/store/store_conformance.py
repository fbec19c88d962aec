"""
The conformance suite every ``IChannelStore`` passes. A test module imports ``CONFORMANCE``
and parameterises a ``store`` fixture over its implementations.

The money rules (``store.rules``) have a check each, and the transition checks are generated
from the tables in ``channel.states``: every legal edge of both sides is accepted, every other
pair of states refused, so an edge added to a table is tested on every store without a line
here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Mapping

import pytest
from twisted.internet import defer
from zope.interface.verify import verifyObject

from twisted_paychan.store.interfaces import (
    ChannelNotOpen,
    DuplicateChannel,
    IChannelStore,
    NotPrunable,
    StoreError,
    TransitionConflict,
    UnknownChannel,
    totals_of,
)
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)
from twisted_paychan.channel.states import (
    CLIENT_TRANSITION_FIELDS,
    CLIENT_TRANSITIONS,
    SERVER_TRANSITION_FIELDS,
    SERVER_TRANSITIONS,
    IllegalTransition,
)

Check = Callable[[Any], Awaitable[None]]


def server_record(n: int = 1, **kw: Any) -> ServerChannelRecord:
    fields = dict(
        contract_txid=bytes([n]) * 32, version=2, contract=b"\x01\x00\x00\x00" + bytes([n]) * 60,
        value=1_000_000, expiry=1_800_000_000, server_key=b"\x02" + bytes([n]) * 32,
        client_key=b"\x03" + bytes([n]) * 32, created_at=1_700_000_000 + n, updated_at=1_700_000_000 + n,
    )
    fields.update(kw)
    return ServerChannelRecord(**fields)  # type: ignore[arg-type]


def client_record(n: int = 1, **kw: Any) -> ClientChannelRecord:
    fields = dict(
        contract_txid=bytes([n]) * 32, server_id=b"\xaa" * 32, version=1, contract=b"contract" + bytes([n]),
        refund=b"refund" + bytes([n]), client_key=b"\x03" + bytes([n]) * 32, server_key=b"\x02" + bytes([n]) * 32,
        value=500_000, client_change=500_000, expiry=1_800_000_000, refund_fees=1234,
    )
    fields.update(kw)
    return ClientChannelRecord(**fields)  # type: ignore[arg-type]


async def check_provides_interface(store: Any) -> None:
    assert verifyObject(IChannelStore, store)


async def check_server_round_trip(store: Any) -> None:
    rec = server_record(1, client_output=b"out")
    await store.add_server_channel(rec)
    assert await store.server_channel(rec.contract_txid) == rec
    assert await store.server_channel(b"\x99" * 32) is None


async def check_server_duplicate(store: Any) -> None:
    await store.add_server_channel(server_record(1))
    with pytest.raises(DuplicateChannel):
        await store.add_server_channel(server_record(1))


async def check_record_payment(store: Any) -> None:
    rec = server_record(2)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 5000, b"sig5000")
    await store.record_payment(rec.contract_txid, 5000, b"sig5000b")  # equal b is allowed (§7.3)
    got = await store.server_channel(rec.contract_txid)
    assert (got.best_value, got.best_signature) == (5000, b"sig5000b")
    with pytest.raises(UnknownChannel):
        await store.record_payment(b"\x77" * 32, 1, b"x")


async def check_transition_server_round_trip(store: Any) -> None:
    rec = server_record(3)
    await store.add_server_channel(rec)
    new = await store.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.SETTLING,
                                        note="fee above b", settlement_tx=b"tx")
    assert new == replace(rec, state=ServerChannelState.SETTLING, note="fee above b", settlement_tx=b"tx")
    assert await store.server_channel(rec.contract_txid) == new
    with pytest.raises(UnknownChannel):
        await store.transition_server(server_record(9).contract_txid, ServerChannelState.OPEN,
                                      ServerChannelState.SETTLING)


async def check_server_listing_order(store: Any) -> None:
    for n in (5, 3, 4):
        await store.add_server_channel(server_record(n))
    assert [r.contract_txid[0] for r in await store.server_channels()] == [5, 3, 4]


async def check_server_listing_by_state_and_page(store: Any) -> None:
    """Asked for states, only those, oldest first; with a limit, the newest page of them (a
    restart loads the live channels, the dashboard a page: neither reads a long history)."""
    for n in (21, 22, 23, 24, 25):
        await store.add_server_channel(server_record(n))
    for n in (22, 24):
        await store.transition_server(server_record(n).contract_txid, ServerChannelState.OPEN,
                                      ServerChannelState.SETTLING, settlement_tx=b"tx")
    await store.record_payment(server_record(23).contract_txid, 700, b"sig700")

    def ids(records: list[ServerChannelRecord]) -> list[int]:
        return [r.contract_txid[0] for r in records]

    opened = await store.server_channels([ServerChannelState.OPEN])
    assert ids(opened) == [21, 23, 25]
    assert opened[1].best_value == 700
    assert ids(await store.server_channels({ServerChannelState.SETTLING, ServerChannelState.OPEN})) == [21, 22, 23, 24, 25]
    assert await store.server_channels([ServerChannelState.REFUNDED]) == []
    assert await store.server_channels([]) == []
    assert ids(await store.server_channels(limit=2)) == [24, 25]
    assert ids(await store.server_channels(limit=2, offset=2)) == [22, 23]
    assert ids(await store.server_channels(limit=2, offset=4)) == [21]
    assert await store.server_channels(limit=2, offset=5) == []
    assert await store.server_channels(limit=0) == []
    assert ids(await store.server_channels([ServerChannelState.OPEN], limit=2)) == [23, 25]
    assert (await store.server_channels([ServerChannelState.OPEN], limit=2))[0].best_value == 700
    for bad in (dict(limit=-1), dict(offset=-1)):
        with pytest.raises(ValueError):
            await store.server_channels(**bad)


async def check_server_totals(store: Any) -> None:
    """The store's aggregate equals the sums over every record, payments just stored included."""
    empty = await store.server_totals()
    assert (sum(empty.by_state.values()), empty.value_locked, empty.paid_to_us, empty.next_open_expiry) == (0, 0, 0, None)
    for n, expiry in ((31, 1_800_000_300), (32, 1_800_000_100), (33, 1_800_000_200), (34, 1_800_000_000)):
        await store.add_server_channel(server_record(n, value=1_000_000 + n, expiry=expiry))
    await store.record_payment(server_record(31).contract_txid, 5_000, b"sig5000")
    await store.record_payment(server_record(32).contract_txid, 7_000, b"sig7000")
    await store.transition_server(server_record(32).contract_txid, ServerChannelState.OPEN,
                                  ServerChannelState.SETTLING, settlement_tx=b"tx")
    await store.transition_server(server_record(32).contract_txid, ServerChannelState.SETTLING,
                                  ServerChannelState.SETTLED)
    await store.transition_server(server_record(34).contract_txid, ServerChannelState.OPEN,
                                  ServerChannelState.SETTLING, settlement_tx=b"tx")
    await store.transition_server(server_record(34).contract_txid, ServerChannelState.SETTLING,
                                  ServerChannelState.STUCK, note="why")
    await store.record_payment(server_record(31).contract_txid, 6_000, b"sig6000")
    totals = await store.server_totals()
    assert totals == totals_of(await store.server_channels())
    assert totals.by_state[ServerChannelState.OPEN] == 2 and totals.by_state[ServerChannelState.SETTLED] == 1
    assert totals.by_state[ServerChannelState.REFUNDED] == 0
    assert totals.value_locked == 1_000_031 + 1_000_033 + 1_000_034
    assert totals.paid_to_us == 13_000
    assert totals.next_open_expiry == 1_800_000_200


async def check_client_round_trip(store: Any) -> None:
    rec = client_record(1)
    await store.add_client_channel(rec)
    assert await store.client_channel(rec.contract_txid) == rec
    with pytest.raises(DuplicateChannel):
        await store.add_client_channel(rec)


async def check_client_change(store: Any) -> None:
    rec = client_record(2)
    await store.add_client_channel(rec)
    await store.record_client_change(rec.contract_txid, 499_000)
    assert (await store.client_channel(rec.contract_txid)).client_change == 499_000
    with pytest.raises(UnknownChannel):
        await store.record_client_change(b"\x55" * 32, 1)


async def check_transition_client_round_trip(store: Any) -> None:
    rec = client_record(3)
    await store.add_client_channel(rec)
    new = await store.transition_client(rec.contract_txid, ClientChannelState.OPEN, ClientChannelState.SETTLED,
                                        close_tx=b"settlement")
    assert new == replace(rec, state=ClientChannelState.SETTLED, close_tx=b"settlement")
    assert await store.client_channel(rec.contract_txid) == new
    assert [r.contract_txid for r in await store.client_channels()] == [rec.contract_txid]


async def check_client_listing_by_state(store: Any) -> None:
    """Asked for one state, the listing holds only those records, oldest first (a client that
    looks for a channel to resume asks for the open ones: its history may be long)."""
    for n in (14, 12, 13):
        await store.add_client_channel(client_record(n))
    await store.transition_client(client_record(12).contract_txid, ClientChannelState.OPEN,
                                  ClientChannelState.SETTLED, close_tx=b"settlement")
    await store.record_client_change(client_record(13).contract_txid, 400_000)
    opened = await store.client_channels(ClientChannelState.OPEN)
    assert [r.contract_txid[0] for r in opened] == [14, 13]
    assert opened[1].client_change == 400_000
    assert [r.contract_txid[0] for r in await store.client_channels(ClientChannelState.SETTLED)] == [12]
    assert await store.client_channels(ClientChannelState.REFUNDED) == []
    assert [r.contract_txid[0] for r in await store.client_channels()] == [14, 12, 13]


async def check_failure_does_not_spoil_others(store: Any) -> None:
    """One failing write in a batch fails only its own Deferred."""
    from twisted.internet import defer

    rec = server_record(7)
    await store.add_server_channel(rec)
    results = await defer.DeferredList(
        [
            store.record_payment(rec.contract_txid, 100, b"a"),
            store.record_payment(b"\x66" * 32, 100, b"b"),
            store.record_payment(rec.contract_txid, 200, b"c"),
        ],
        consumeErrors=True,
    )
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].check(UnknownChannel)
    assert (await store.server_channel(rec.contract_txid)).best_value == 200


async def check_payment_refused_unless_open(store: Any) -> None:
    rec = server_record(8)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 100, b"a")
    await store.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.CONTRACT_FAILED)
    with pytest.raises(ChannelNotOpen):
        await store.record_payment(rec.contract_txid, 200, b"b")
    assert (await store.server_channel(rec.contract_txid)).best_value == 100


async def check_settling_transition_keeps_payments(store: Any) -> None:
    """Settlement freezes the channel: the state changes, b and sig_C stay as stored."""
    rec = server_record(9)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 700, b"sig700")
    await store.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.SETTLING,
                                  note="operator")
    got = await store.server_channel(rec.contract_txid)
    assert (got.state, got.note, got.best_value, got.best_signature) == (
        ServerChannelState.SETTLING, "operator", 700, b"sig700")
    with pytest.raises(ChannelNotOpen):
        await store.record_payment(rec.contract_txid, 800, b"sig800")
    with pytest.raises(UnknownChannel):
        await store.transition_server(b"\x42" * 32, ServerChannelState.OPEN, ServerChannelState.SETTLING)


# -- the money rules ------------------------------------------------------------------------


async def check_lower_b_refused(store: Any) -> None:
    rec = server_record(10)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 500, b"sig500")
    with pytest.raises(StoreError) as e:
        await store.record_payment(rec.contract_txid, 499, b"sig499")
    assert not isinstance(e.value, ChannelNotOpen)
    got = await store.server_channel(rec.contract_txid)
    assert (got.best_value, got.best_signature) == (500, b"sig500")


def _payment_refused_in(state: ServerChannelState) -> Check:
    async def check(store: Any) -> None:
        rec = server_record(11, state=state, best_value=100, best_signature=b"a")
        await store.add_server_channel(rec)
        with pytest.raises(ChannelNotOpen) as e:
            await store.record_payment(rec.contract_txid, 200, b"b")
        assert e.value.state == state.value
        assert await store.server_channel(rec.contract_txid) == rec

    check.__name__ = f"check_payment_refused_when_{state.name.lower()}"
    return check


async def check_higher_c_refused(store: Any) -> None:
    rec = client_record(10)
    await store.add_client_channel(rec)
    await store.record_client_change(rec.contract_txid, 499_000)
    with pytest.raises(StoreError) as e:
        await store.record_client_change(rec.contract_txid, 499_001)
    assert not isinstance(e.value, ChannelNotOpen)
    with pytest.raises(StoreError):
        await store.record_client_change(rec.contract_txid, rec.value + 1)
    assert (await store.client_channel(rec.contract_txid)).client_change == 499_000


def _change_in(state: ClientChannelState) -> Check:
    """c is stored while the channel may still be paid on (open, expiring), refused after."""

    async def check(store: Any) -> None:
        rec = client_record(11, state=state)
        await store.add_client_channel(rec)
        if state in (ClientChannelState.OPEN, ClientChannelState.EXPIRING):
            await store.record_client_change(rec.contract_txid, 400_000)
            assert (await store.client_channel(rec.contract_txid)).client_change == 400_000
        else:
            with pytest.raises(ChannelNotOpen):
                await store.record_client_change(rec.contract_txid, 400_000)
            assert await store.client_channel(rec.contract_txid) == rec

    check.__name__ = f"check_change_when_{state.name.lower()}"
    return check


# -- transitions: the tables ------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    """What the table-driven checks need of one side of the store."""

    name: str
    table: Mapping[Any, frozenset[Any]]
    fields: frozenset[str]
    record: Callable[..., Any]
    #: Keyword arguments that give a record money to keep (b and sig_C, or c).
    money: dict[str, Any]
    #: The field a transition records the closing transaction in.
    closing: str
    add: Callable[[Any, Any], Awaitable[None]]
    read: Callable[[Any, bytes], Awaitable[Any]]
    transition: Callable[..., Awaitable[Any]]
    #: A legal edge, to name a forbidden field on.
    edge: tuple[Any, Any]
    #: One field that is money, which must be among the forbidden ones.
    money_field: str


SERVER = _Side(
    "server", SERVER_TRANSITIONS, SERVER_TRANSITION_FIELDS, server_record,
    {"best_value": 300, "best_signature": b"sig300"}, "settlement_tx",
    lambda store, rec: store.add_server_channel(rec), lambda store, txid: store.server_channel(txid),
    lambda store, *args, **changes: store.transition_server(*args, **changes),
    (ServerChannelState.OPEN, ServerChannelState.SETTLING), "best_value",
)
CLIENT = _Side(
    "client", CLIENT_TRANSITIONS, CLIENT_TRANSITION_FIELDS, client_record,
    {"client_change": 123_000}, "close_tx",
    lambda store, rec: store.add_client_channel(rec), lambda store, txid: store.client_channel(txid),
    lambda store, *args, **changes: store.transition_client(*args, **changes),
    (ClientChannelState.OPEN, ClientChannelState.EXPIRING), "client_change",
)


def _edge(side: _Side, old: Any, new: Any) -> Check:
    legal = new in side.table[old]

    async def check(store: Any) -> None:
        rec = side.record(20, state=old, **side.money)
        await side.add(store, rec)
        if legal:
            changes = {"note": "moved", "updated_at": 1_800_000_001, side.closing: b"closing tx"}
            got = await side.transition(store, rec.contract_txid, old, new, **changes)
            assert got == replace(rec, state=new, **changes)
            assert await side.read(store, rec.contract_txid) == got
        else:
            with pytest.raises(IllegalTransition):
                await side.transition(store, rec.contract_txid, old, new, note="moved")
            assert await side.read(store, rec.contract_txid) == rec

    check.__name__ = f"check_{side.name}_{old.name.lower()}_to_{new.name.lower()}_{'accepted' if legal else 'refused'}"
    return check


def _forbidden_fields(side: _Side) -> Check:
    """Only the fields the table allows change with a transition: never the money, the channel
    or the state itself (and nothing is written when one is named)."""
    forbidden = sorted({f.name for f in dataclasses.fields(side.record())} - side.fields)
    assert side.money_field in forbidden

    async def check(store: Any) -> None:
        rec = side.record(21)
        await side.add(store, rec)
        for name in forbidden + ["no_such_field"]:
            with pytest.raises(IllegalTransition, match=name):
                await side.transition(store, rec.contract_txid, *side.edge, note="x", **{name: getattr(rec, name, 1)})
            assert await side.read(store, rec.contract_txid) == rec

    check.__name__ = f"check_{side.name}_transition_refuses_forbidden_fields"
    return check


# -- transitions: compare-and-set -------------------------------------------------------------


async def check_server_transition_conflict(store: Any) -> None:
    """A stale expected state: TransitionConflict naming both states, nothing written. The
    conflict is reported before the edge is judged (the caller decided on a stale state)."""
    S = ServerChannelState
    rec = server_record(22, best_value=50, best_signature=b"s")
    await store.add_server_channel(rec)
    with pytest.raises(TransitionConflict) as e:
        await store.transition_server(rec.contract_txid, S.SETTLING, S.STUCK, note="stale")
    assert (e.value.expected, e.value.actual) == ("settling", "open")
    with pytest.raises(TransitionConflict):  # SETTLED -> OPEN is no edge, but the conflict comes first
        await store.transition_server(rec.contract_txid, S.SETTLED, S.OPEN)
    with pytest.raises(IllegalTransition):  # the right expected state: now the edge is judged
        await store.transition_server(rec.contract_txid, S.OPEN, S.STUCK)
    assert await store.server_channel(rec.contract_txid) == rec


async def check_client_transition_conflict(store: Any) -> None:
    C = ClientChannelState
    rec = client_record(22)
    await store.add_client_channel(rec)
    with pytest.raises(TransitionConflict) as e:
        await store.transition_client(rec.contract_txid, C.EXPIRING, C.REFUNDED, note="stale")
    assert (e.value.expected, e.value.actual) == ("expiring", "open")
    with pytest.raises(TransitionConflict):
        await store.transition_client(rec.contract_txid, C.REFUNDED, C.OPEN)
    assert await store.client_channel(rec.contract_txid) == rec


async def check_concurrent_transitions_one_wins(store: Any) -> None:
    """Two writers that both read OPEN: asked together (one batch for a batching store), the
    first moves the channel and the second loses cleanly."""
    S = ServerChannelState
    rec = server_record(23)
    await store.add_server_channel(rec)
    results = await defer.DeferredList(
        [
            store.transition_server(rec.contract_txid, S.OPEN, S.SETTLING, note="operator"),
            store.transition_server(rec.contract_txid, S.OPEN, S.CONTRACT_FAILED, note="double-spent"),
        ],
        consumeErrors=True,
    )
    assert [ok for ok, _ in results] == [True, False]
    assert results[1][1].check(TransitionConflict)
    got = await store.server_channel(rec.contract_txid)
    assert (got.state, got.note) == (S.SETTLING, "operator")
    assert results[0][1] == got


async def check_unknown_channel_transitions(store: Any) -> None:
    """UnknownChannel comes before every other check."""
    with pytest.raises(UnknownChannel):
        await store.transition_server(b"\x31" * 32, ServerChannelState.OPEN, ServerChannelState.SETTLING)
    with pytest.raises(UnknownChannel):
        await store.transition_server(b"\x31" * 32, ServerChannelState.SETTLED, ServerChannelState.OPEN,
                                      best_value=1)
    with pytest.raises(UnknownChannel):
        await store.transition_client(b"\x32" * 32, ClientChannelState.OPEN, ClientChannelState.EXPIRING)
    with pytest.raises(UnknownChannel):
        await store.transition_client(b"\x32" * 32, ClientChannelState.REFUNDED, ClientChannelState.OPEN)


async def check_settling_keeps_every_payment(store: Any) -> None:
    """OPEN -> SETTLING returns (and stores) every payment made before it, even those asked for
    in the same turn (a batching store keeps them in its payment log until a transaction
    absorbs them), and refuses every payment after it."""
    S = ServerChannelState
    rec = server_record(24)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 100, b"sig100")
    await store.record_payment(rec.contract_txid, 200, b"sig200")
    paid = store.record_payment(rec.contract_txid, 300, b"sig300")
    settling = store.transition_server(rec.contract_txid, S.OPEN, S.SETTLING, note="operator")
    late = store.record_payment(rec.contract_txid, 400, b"sig400")
    await paid
    got = await settling
    assert (got.state, got.best_value, got.best_signature) == (S.SETTLING, 300, b"sig300")
    with pytest.raises(ChannelNotOpen):
        await late
    assert await store.server_channel(rec.contract_txid) == got


async def check_client_transition_keeps_change(store: Any) -> None:
    C = ClientChannelState
    rec = client_record(24)
    await store.add_client_channel(rec)
    await store.record_client_change(rec.contract_txid, 450_000)
    changed = store.record_client_change(rec.contract_txid, 440_000)
    expiring = store.transition_client(rec.contract_txid, C.OPEN, C.EXPIRING, note="refund due")
    await changed
    got = await expiring
    assert (got.state, got.client_change, got.note) == (C.EXPIRING, 440_000, "refund due")
    await store.record_client_change(rec.contract_txid, 430_000)  # an expiring channel still takes c
    settled = await store.transition_client(rec.contract_txid, C.EXPIRING, C.SETTLED, close_tx=b"settlement")
    assert settled.client_change == 430_000
    with pytest.raises(ChannelNotOpen):
        await store.record_client_change(rec.contract_txid, 420_000)
    assert await store.client_channel(rec.contract_txid) == settled


# -- pruning (issue #14 item 3) --------------------------------------------------------------


async def check_prune_contract_failed(store: Any) -> None:
    rec = server_record(40, best_value=1000, best_signature=b"initial")
    keep = server_record(41)
    await store.add_server_channel(rec)
    await store.add_server_channel(keep)
    await store.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.CONTRACT_FAILED,
                                  note="contract rejected by the node")
    await store.prune_server_channel(rec.contract_txid, 1000)
    assert await store.server_channel(rec.contract_txid) is None
    assert [r.contract_txid for r in await store.server_channels()] == [keep.contract_txid]
    with pytest.raises(UnknownChannel):
        await store.prune_server_channel(rec.contract_txid, 1000)


def _prune_refused_in(state: ServerChannelState) -> Check:
    async def check(store: Any) -> None:
        rec = server_record(42, state=state, best_value=100, best_signature=b"a")
        await store.add_server_channel(rec)
        with pytest.raises(NotPrunable):
            await store.prune_server_channel(rec.contract_txid, 100)
        assert await store.server_channel(rec.contract_txid) == rec

    check.__name__ = f"check_prune_refused_{state.name.lower()}"
    return check


async def check_prune_refused_after_a_payment(store: Any) -> None:
    """Compare-and-set on b: a record paid since the caller read it is kept."""
    rec = server_record(43, best_value=100, best_signature=b"a")
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 300, b"c")
    await store.transition_server(rec.contract_txid, ServerChannelState.OPEN, ServerChannelState.CONTRACT_FAILED)
    with pytest.raises(NotPrunable):
        await store.prune_server_channel(rec.contract_txid, 100)
    got = await store.server_channel(rec.contract_txid)
    assert (got.best_value, got.best_signature) == (300, b"c")


async def check_prune_refused_with_a_settlement(store: Any) -> None:
    rec = server_record(44, state=ServerChannelState.CONTRACT_FAILED, settlement_tx=b"tx")
    await store.add_server_channel(rec)
    with pytest.raises(NotPrunable):
        await store.prune_server_channel(rec.contract_txid, 0)
    assert await store.server_channel(rec.contract_txid) == rec


CONFORMANCE = [
    check_provides_interface,
    check_server_round_trip,
    check_server_duplicate,
    check_record_payment,
    check_transition_server_round_trip,
    check_server_listing_order,
    check_client_listing_by_state,
    check_server_listing_by_state_and_page,
    check_server_totals,
    check_client_round_trip,
    check_client_change,
    check_transition_client_round_trip,
    check_failure_does_not_spoil_others,
    check_payment_refused_unless_open,
    check_settling_transition_keeps_payments,
    check_lower_b_refused,
    *[_payment_refused_in(s) for s in ServerChannelState if s is not ServerChannelState.OPEN],
    check_higher_c_refused,
    *[_change_in(s) for s in ClientChannelState],
    *[_edge(side, old, new) for side in (SERVER, CLIENT) for old in side.table for new in side.table],
    *[_forbidden_fields(side) for side in (SERVER, CLIENT)],
    check_server_transition_conflict,
    check_client_transition_conflict,
    check_concurrent_transitions_one_wins,
    check_unknown_channel_transitions,
    check_settling_keeps_every_payment,
    check_client_transition_keeps_change,
    check_prune_contract_failed,
    *[_prune_refused_in(s) for s in ServerChannelState if s is not ServerChannelState.CONTRACT_FAILED],
    check_prune_refused_after_a_payment,
    check_prune_refused_with_a_settlement,
]
