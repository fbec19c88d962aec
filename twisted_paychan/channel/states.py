"""
Every legal change of a stored channel's state, on each side, in one place.

The lifecycle machines move a channel only along these edges, and every store refuses a
compare-and-set transition that is not one of them (``check_server_transition`` /
``check_client_transition``), so a bug in an adapter cannot write a state the table does not
allow. A self-edge (``SETTLING -> SETTLING``) is a change of the record's other fields (a
rebuilt settlement, a new note) that keeps its state; it is legal only where it is listed.

The lifecycle machines' tables (``server_lifecycle.LIFECYCLE_TABLE``, ``client_lifecycle.LIFECYCLE``)
write exactly these edges (their tests hold them equal); ``doc/states.md`` draws them.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from twisted_paychan.channel.records import ClientChannelState, ServerChannelState

S = ServerChannelState
C = ClientChannelState

#: old state -> the states a transition may move it to.
SERVER_TRANSITIONS: Mapping[ServerChannelState, frozenset[ServerChannelState]] = {
    # Settlement starts by freezing the channel (no payment after it); a contract the node
    # refuses, that is double-spent or that never confirms fails the channel; a refund of the
    # client's that confirms while we still held the channel open ends it; a contract that
    # reached no node is noted pending (and the note cleared once a node takes it).
    S.OPEN: frozenset({S.OPEN, S.SETTLING, S.CONTRACT_FAILED, S.REFUNDED, S.SETTLED}),
    # A settlement rebuilt (fee bump) or first stored keeps SETTLING; one that cannot be made or
    # broadcast is STUCK; the contract output spent on chain ends it either way.
    S.SETTLING: frozenset({S.SETTLING, S.STUCK, S.SETTLED, S.REFUNDED}),
    S.STUCK: frozenset({S.STUCK, S.SETTLING, S.SETTLED, S.REFUNDED}),
    # A contract marked failed (never confirmed in time) that does confirm after all still
    # carries the client's payments: it may be settled, and its output spent either way.
    S.CONTRACT_FAILED: frozenset({S.SETTLING, S.SETTLED, S.REFUNDED}),
    S.SETTLED: frozenset(),
    S.REFUNDED: frozenset(),
}

#: The edges of ``channel.client_lifecycle.LIFECYCLE``, which says what takes each one (a test
#: checks they are equal).
CLIENT_TRANSITIONS: Mapping[ClientChannelState, frozenset[ClientChannelState]] = {
    # Refund due; settlement seen (CLOSE from the server, or on the chain); our refund confirmed;
    # paid down to zero with the settlement awaited from the chain (a note, the state kept).
    # An opening that failed before CHANNEL_OPEN, its contract unknown: coins reclaimed.
    C.OPEN: frozenset({C.OPEN, C.EXPIRING, C.SETTLED, C.REFUNDED, C.FAILED}),
    C.EXPIRING: frozenset({C.SETTLED, C.REFUNDED}),
    # A settlement seen in a mempool may be replaced by another spend before one confirms.
    C.SETTLED: frozenset({C.SETTLED, C.REFUNDED}),
    C.REFUNDED: frozenset(),
    C.FAILED: frozenset(),
}

#: The record fields a transition may change besides the state: never the money (b, sig_C,
#: c move only through ``record_payment`` / ``record_client_change``) nor the channel itself.
SERVER_TRANSITION_FIELDS = frozenset({"note", "settlement_tx", "updated_at"})
CLIENT_TRANSITION_FIELDS = frozenset({"note", "close_tx", "updated_at"})


class IllegalTransition(Exception):
    """A transition the table does not allow, or one that changes a field it may not."""


def check_server_transition(old: ServerChannelState, new: ServerChannelState, fields: Mapping[str, object]) -> None:
    _check(SERVER_TRANSITIONS, SERVER_TRANSITION_FIELDS, old, new, fields)


def check_client_transition(old: ClientChannelState, new: ClientChannelState, fields: Mapping[str, object]) -> None:
    _check(CLIENT_TRANSITIONS, CLIENT_TRANSITION_FIELDS, old, new, fields)


_State = TypeVar("_State", ServerChannelState, ClientChannelState)


def _check(table: Mapping[_State, frozenset[_State]], allowed_fields: frozenset[str], old: _State, new: _State,
           fields: Mapping[str, object]) -> None:
    if new not in table[old]:
        raise IllegalTransition(f"no transition from {old.value} to {new.value}")
    extra = set(fields) - allowed_fields
    if extra:
        raise IllegalTransition(f"a transition may not change {', '.join(sorted(extra))}")
