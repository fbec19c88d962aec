"""
The money rules every channel store applies, stated once.

Each store (``memory``, ``sqlite`` and its payment log) calls these with what it has stored, at
the moment it would write, so the in-memory double refuses exactly what SQLite refuses:

- a server payment only on an OPEN channel, and b never lower (``check_payment``);
- a client's c never higher, and not on a finished channel (``check_change``);
- a server record deleted only if its contract failed, it has no settlement and its b is the one
  the caller decided on (``check_prune``);
- a state change only by compare-and-set from the state the caller expects, along an edge of
  ``channel.states``'s table, changing only the fields that table allows (``check_server_cas``,
  ``check_client_cas``).

Where SQLite states a rule in an ``UPDATE ... WHERE`` (so the check and the write are one step),
the same rule is also asked here to explain a refused UPDATE, and the constants below are what
both read.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping, NoReturn, Optional, Sequence

from twisted_paychan.channel.records import ClientChannelState, ServerChannelState
from twisted_paychan.channel.states import IllegalTransition, check_client_transition, check_server_transition

from twisted_paychan.store.interfaces import (
    LOCKED_STATES,
    ChannelNotOpen,
    NotPrunable,
    ServerTotals,
    StoreError,
    TransitionConflict,
    UnknownChannel,
)

#: The only server state that takes a payment: settlement starts by leaving it, so every
#: payment stored is in the record the settlement is built from.
SERVER_PAYABLE = ServerChannelState.OPEN
#: Client states in which c may still be stored. EXPIRING still takes one: the payer may sign
#: a last payment while its refund waits (that only moves money the payer chose to move); a
#: settled or refunded channel is over and a payment on it is a bug.
CLIENT_PAYABLE = frozenset({ClientChannelState.OPEN, ClientChannelState.EXPIRING})
_CLIENT_PAYABLE_VALUES = frozenset(s.value for s in CLIENT_PAYABLE)


def check_payment(contract_txid: bytes, state: str, stored: int, best_value: int) -> None:
    """``record_payment`` given the stored state and b: payments only on an OPEN channel
    (``ChannelNotOpen``), and b never goes down (``StoreError``)."""
    if state != SERVER_PAYABLE.value:
        raise ChannelNotOpen(contract_txid, state)
    if best_value < stored:
        raise StoreError(f"refusing to lower b from {stored} to {best_value}")


#: The only server state whose records may be pruned.
SERVER_PRUNABLE = ServerChannelState.CONTRACT_FAILED


def check_prune(contract_txid: bytes, state: str, settlement_tx: Optional[bytes], stored: int,
                best_value: int) -> None:
    """``prune_server_channel`` given the stored record: ``NotPrunable`` unless it is
    CONTRACT_FAILED, unsettled, and its b is the caller's."""
    if state != SERVER_PRUNABLE.value:
        raise NotPrunable(f"channel {contract_txid.hex()} is {state}, not {SERVER_PRUNABLE.value}")
    if settlement_tx is not None:
        raise NotPrunable(f"channel {contract_txid.hex()} has a settlement")
    if stored != best_value:
        raise NotPrunable(f"channel {contract_txid.hex()} has b {stored}, not {best_value}")


def check_change(contract_txid: bytes, state: str, stored: int, client_change: int) -> None:
    """``record_client_change`` given the stored state and c: not on a finished channel
    (``ChannelNotOpen``), and c never goes up (``StoreError``)."""
    if state not in _CLIENT_PAYABLE_VALUES:
        raise ChannelNotOpen(contract_txid, state)
    if client_change > stored:
        raise StoreError(f"refusing to raise c from {stored} to {client_change}")


def check_server_cas(contract_txid: bytes, stored: ServerChannelState, expected: ServerChannelState,
                     new: ServerChannelState, changes: Mapping[str, object]) -> None:
    """``transition_server`` given the stored state: ``TransitionConflict`` if another writer
    moved the channel first, then ``IllegalTransition`` if the table has no such edge or a
    field may not change. A conflict is reported first: the caller's decision was made on a
    state that no longer holds, whatever it decided."""
    if stored is not expected:
        raise TransitionConflict(contract_txid, expected.value, stored.value)
    check_server_transition(expected, new, changes)


def check_client_cas(contract_txid: bytes, stored: ClientChannelState, expected: ClientChannelState,
                     new: ClientChannelState, changes: Mapping[str, object]) -> None:
    """``transition_client`` given the stored state, as ``check_server_cas``."""
    if stored is not expected:
        raise TransitionConflict(contract_txid, expected.value, stored.value)
    check_client_transition(expected, new, changes)


def cas_update(table: str, fields: list[str], mark: str) -> str:
    """The one UPDATE of a compare-and-set transition, for the SQL stores: the comparison is its
    WHERE, so the check and the write are one step (``mark`` is the driver's placeholder).
    Parameters: the new state, the fields' values, the txid, the expected state."""
    sets = ", ".join([f"state = {mark}"] + [f"{name} = {mark}" for name in fields])
    return f"UPDATE {table} SET {sets} WHERE contract_txid = {mark} AND state = {mark}"


def judged_legal(check: Callable[[str], None], expected: str) -> bool:
    """Whether the edge from ``expected`` is legal, judged before the write (as if the stored
    state were the expected one): an illegal edge is then reported only after the stored state
    was compared, so a conflict is reported first. Only a legal UPDATE is run, and its field
    names were then checked against the table's allowed fields, so they are columns."""
    try:
        check(expected)
    except IllegalTransition:
        return False
    return True


def explain_refused(contract_txid: bytes, row: Optional[Sequence[Any]], explain: Callable[[Sequence[Any]], None],
                    refused: str) -> NoReturn:
    """A SQL store's rule statement (an UPDATE or DELETE whose WHERE is the rule) matched no
    row: ``row`` is what is stored, read back, and ``explain(row)`` is the rule that says why
    (it raises). No row is an unknown channel; a rule that finds nothing wrong is a bug."""
    if row is None:
        raise UnknownChannel(contract_txid.hex())
    explain(row)
    raise AssertionError(f"{refused} that passes every check")


# -- listings and totals (the SQL stores share the statements) ------------------------------------

#: Counts and sums by state; ``server_totals`` makes ``ServerTotals`` of them.
SERVER_TOTALS_SQL = ("SELECT state, COUNT(*), COALESCE(SUM(value), 0), COALESCE(SUM(best_value), 0) "
                     "FROM server_channels GROUP BY state")
NEXT_OPEN_EXPIRY_SQL = f"SELECT MIN(expiry) FROM server_channels WHERE state = '{SERVER_PAYABLE.value}'"


def server_totals(rows: Sequence[Sequence[Any]], next_open_expiry: Optional[int]) -> ServerTotals:
    """``ServerTotals`` from the rows of ``SERVER_TOTALS_SQL`` (state, count, sum of V, sum of b)."""
    by_state = {s: 0 for s in ServerChannelState}
    locked = paid = 0
    for state, count, value, best in rows:
        s = ServerChannelState(state)
        by_state[s] = int(count)
        paid += int(best)
        if s in LOCKED_STATES:
            locked += int(value)
    return ServerTotals(by_state, locked, paid, None if next_open_expiry is None else int(next_open_expiry))


def server_listing(columns: str, placeholder: str, states: Optional[Collection[ServerChannelState]],
                   limit: Optional[int], offset: int) -> tuple[str, list[Any]]:
    """The SELECT of ``IChannelStore.server_channels`` and its arguments: the states asked for,
    oldest first; with ``limit``, the newest page of them (still oldest first)."""
    args: list[Any] = []
    where = ""
    if states is not None:
        wanted = sorted({s.value for s in states})
        if not wanted:
            return f"SELECT {columns} FROM server_channels WHERE 0 = 1", []
        where = f" WHERE state IN ({', '.join([placeholder] * len(wanted))})"
        args.extend(wanted)
    if limit is None:
        return f"SELECT {columns} FROM server_channels{where} ORDER BY seq", args
    args.extend([limit, offset])
    return (f"SELECT {columns} FROM (SELECT {columns}, seq FROM server_channels{where} "
            f"ORDER BY seq DESC LIMIT {placeholder} OFFSET {placeholder}) AS page ORDER BY seq", args)
