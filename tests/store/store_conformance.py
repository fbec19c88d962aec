"""
The conformance suite every ``IChannelStore`` passes. A test module imports ``CONFORMANCE``
and parameterises a ``store`` fixture over its implementations.
"""

from dataclasses import replace

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from twisted_paychan.store.interfaces import ChannelNotOpen, DuplicateChannel, IChannelStore, StoreError, UnknownChannel
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)


def server_record(n: int = 1, **kw) -> ServerChannelRecord:
    fields = dict(
        contract_txid=bytes([n]) * 32, version=2, contract=b"\x01\x00\x00\x00" + bytes([n]) * 60,
        value=1_000_000, expiry=1_800_000_000, server_key=b"\x02" + bytes([n]) * 32,
        client_key=b"\x03" + bytes([n]) * 32, created_at=1_700_000_000 + n, updated_at=1_700_000_000 + n,
    )
    fields.update(kw)
    return ServerChannelRecord(**fields)  # type: ignore[arg-type]


def client_record(n: int = 1, **kw) -> ClientChannelRecord:
    fields = dict(
        contract_txid=bytes([n]) * 32, server_id=b"\xaa" * 32, version=1, contract=b"contract" + bytes([n]),
        refund=b"refund" + bytes([n]), client_key=b"\x03" + bytes([n]) * 32, server_key=b"\x02" + bytes([n]) * 32,
        value=500_000, client_change=500_000, expiry=1_800_000_000, refund_fees=1234,
    )
    fields.update(kw)
    return ClientChannelRecord(**fields)  # type: ignore[arg-type]


async def check_provides_interface(store):
    assert verifyObject(IChannelStore, store)


async def check_server_round_trip(store):
    rec = server_record(1, client_output=b"out")
    await store.add_server_channel(rec)
    assert await store.server_channel(rec.contract_txid) == rec
    assert await store.server_channel(b"\x99" * 32) is None


async def check_server_duplicate(store):
    await store.add_server_channel(server_record(1))
    with pytest.raises(DuplicateChannel):
        await store.add_server_channel(server_record(1))


async def check_record_payment(store):
    rec = server_record(2)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 5000, b"sig5000")
    await store.record_payment(rec.contract_txid, 5000, b"sig5000b")  # equal b is allowed (§7.3)
    got = await store.server_channel(rec.contract_txid)
    assert (got.best_value, got.best_signature) == (5000, b"sig5000b")
    with pytest.raises(UnknownChannel):
        await store.record_payment(b"\x77" * 32, 1, b"x")


async def check_update_server_channel(store):
    rec = server_record(3)
    await store.add_server_channel(rec)
    new = replace(rec, state=ServerChannelState.STUCK, note="fee above b", settlement_tx=b"tx")
    await store.update_server_channel(new)
    assert await store.server_channel(rec.contract_txid) == new
    with pytest.raises(UnknownChannel):
        await store.update_server_channel(server_record(9))


async def check_server_listing_order(store):
    for n in (5, 3, 4):
        await store.add_server_channel(server_record(n))
    assert [r.contract_txid[0] for r in await store.server_channels()] == [5, 3, 4]


async def check_client_round_trip(store):
    rec = client_record(1)
    await store.add_client_channel(rec)
    assert await store.client_channel(rec.contract_txid) == rec
    with pytest.raises(DuplicateChannel):
        await store.add_client_channel(rec)


async def check_client_change(store):
    rec = client_record(2)
    await store.add_client_channel(rec)
    await store.record_client_change(rec.contract_txid, 499_000)
    assert (await store.client_channel(rec.contract_txid)).client_change == 499_000
    with pytest.raises(UnknownChannel):
        await store.record_client_change(b"\x55" * 32, 1)


async def check_update_client_channel(store):
    rec = client_record(3)
    await store.add_client_channel(rec)
    new = replace(rec, state=ClientChannelState.SETTLED, close_tx=b"settlement")
    await store.update_client_channel(new)
    assert await store.client_channel(rec.contract_txid) == new
    assert [r.contract_txid for r in await store.client_channels()] == [rec.contract_txid]


async def check_failure_does_not_spoil_others(store):
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


async def check_payment_refused_unless_open(store):
    rec = server_record(8)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 100, b"a")
    await store.update_server_channel(replace(rec, best_value=100, best_signature=b"a",
                                              state=ServerChannelState.CONTRACT_FAILED))
    with pytest.raises(ChannelNotOpen):
        await store.record_payment(rec.contract_txid, 200, b"b")
    assert (await store.server_channel(rec.contract_txid)).best_value == 100


async def check_set_server_state_keeps_payments(store):
    """Settlement freezes the channel: the state changes, b and sig_C stay as stored."""
    rec = server_record(9)
    await store.add_server_channel(rec)
    await store.record_payment(rec.contract_txid, 700, b"sig700")
    await store.set_server_state(rec.contract_txid, ServerChannelState.SETTLING, "operator")
    got = await store.server_channel(rec.contract_txid)
    assert (got.state, got.note, got.best_value, got.best_signature) == (
        ServerChannelState.SETTLING, "operator", 700, b"sig700")
    with pytest.raises(ChannelNotOpen):
        await store.record_payment(rec.contract_txid, 800, b"sig800")
    with pytest.raises(UnknownChannel):
        await store.set_server_state(b"\x42" * 32, ServerChannelState.SETTLING)


CONFORMANCE = [
    check_provides_interface,
    check_server_round_trip,
    check_server_duplicate,
    check_record_payment,
    check_update_server_channel,
    check_server_listing_order,
    check_client_round_trip,
    check_client_change,
    check_update_client_channel,
    check_failure_does_not_spoil_others,
    check_payment_refused_unless_open,
    check_set_server_state_keeps_payments,
]
