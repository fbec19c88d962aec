"""``replace_fields`` gives exactly what ``dataclasses.replace`` gives, for the store's records
(the dictionary copy) and for anything else (the fallback), errors included."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_paychan.channel.record_copy import replace_fields
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)

SERVER = ServerChannelRecord(
    contract_txid=b"\x01" * 32, version=2, contract=b"contract", value=1_000_000, expiry=1_800_000_000,
    server_key=b"\x02" * 33, client_key=b"\x03" * 33, best_value=1000, best_signature=b"\x30\x01",
    created_at=5, updated_at=6,
)
CLIENT = ClientChannelRecord(
    contract_txid=b"\x01" * 32, server_id=b"\x07" * 32, version=1, contract=b"contract", refund=b"refund",
    client_key=b"\x03" * 33, server_key=b"\x02" * 33, value=1_000_000, client_change=999_000,
    expiry=1_800_000_000, refund_fees=300,
)


@given(best_value=st.integers(0, 10**9), best_signature=st.none() | st.binary(max_size=73),
       state=st.sampled_from(ServerChannelState), note=st.text(max_size=20))
def test_server_record_as_replace_makes_it(best_value, best_signature, state, note):
    changes = dict(best_value=best_value, best_signature=best_signature, state=state, note=note)
    copy = replace_fields(SERVER, **changes)
    assert copy == dataclasses.replace(SERVER, **changes)
    assert type(copy) is ServerChannelRecord and copy is not SERVER
    assert SERVER.best_value == 1000 and SERVER.best_signature == b"\x30\x01"  # the original stays


@given(client_change=st.integers(0, 10**9), state=st.sampled_from(ClientChannelState),
       close_tx=st.none() | st.binary(max_size=10))
def test_client_record_as_replace_makes_it(client_change, state, close_tx):
    changes = dict(client_change=client_change, state=state, close_tx=close_tx)
    assert replace_fields(CLIENT, **changes) == dataclasses.replace(CLIENT, **changes)


def test_copy_is_still_frozen_and_hashable():
    copy = replace_fields(SERVER, best_value=2000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.best_value = 3000  # type: ignore[misc]
    assert hash(copy) == hash(dataclasses.replace(SERVER, best_value=2000))


def test_unknown_field_fails_as_replace_does():
    with pytest.raises(TypeError, match="nonsense"):
        replace_fields(SERVER, nonsense=1)
    assert replace_fields(SERVER) == SERVER  # still a fresh copy after a refusal


def test_post_init_still_runs():
    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    assert replace_fields(Checked(1), value=2) == Checked(2)
    with pytest.raises(ValueError, match="negative"):
        replace_fields(Checked(1), value=-1)


def test_init_var_and_init_false_fields_go_through_replace():
    @dataclasses.dataclass(frozen=True)
    class Derived:
        value: int
        double: int = dataclasses.field(init=False, default=0)

    with pytest.raises(ValueError, match="init=False"):
        replace_fields(Derived(1), double=4)
    assert replace_fields(Derived(1), value=3) == Derived(3)


def test_not_a_dataclass():
    with pytest.raises(TypeError):
        replace_fields(object(), value=1)
