"""
In-memory channel store: the double of ``IChannelStore`` for tests and for embedding where
durability is someone else's business. Writes "complete" at once (already-fired Deferreds).

It refuses exactly what the SQLite store refuses, through the same checks (``store.rules``):
a test that passes against it must not rely on a write SQLite would not make.
"""

from __future__ import annotations

from typing import Callable, Collection, Optional, TypeVar

from twisted.internet import defer
from zope.interface import implementer

from twisted_paychan.channel.record_copy import replace_fields
from twisted_paychan.channel.records import (
    ClientChannelRecord,
    ClientChannelState,
    ServerChannelRecord,
    ServerChannelState,
)
from twisted_paychan.channel.states import IllegalTransition
from twisted_paychan.store.interfaces import (
    DuplicateChannel,
    IChannelStore,
    ServerTotals,
    StoreError,
    UnknownChannel,
    check_page,
    totals_of,
)
from twisted_paychan.store.rules import check_change, check_client_cas, check_payment, check_prune, check_server_cas

_R = TypeVar("_R", ServerChannelRecord, ClientChannelRecord)


def _transition(records: dict[bytes, _R], contract_txid: bytes, new: object, changes: dict[str, object],
                check: Callable[[_R], None]) -> defer.Deferred[_R]:
    """Both sides' compare-and-set: ``check`` is the rule of ``store.rules`` for the side."""
    old = records.get(contract_txid)
    if old is None:
        return defer.fail(UnknownChannel(contract_txid.hex()))
    try:
        check(old)
    except (StoreError, IllegalTransition):
        return defer.fail()
    record = records[contract_txid] = replace_fields(old, state=new, **changes)
    return defer.succeed(record)


@implementer(IChannelStore)
class MemoryChannelStore:
    def __init__(self) -> None:
        self._server: dict[bytes, ServerChannelRecord] = {}
        self._client: dict[bytes, ClientChannelRecord] = {}

    def add_server_channel(self, record: ServerChannelRecord) -> defer.Deferred[None]:
        if record.contract_txid in self._server:
            return defer.fail(DuplicateChannel(record.contract_txid.hex()))
        self._server[record.contract_txid] = record
        return defer.succeed(None)

    def record_payment(self, contract_txid: bytes, best_value: int, signature: bytes) -> defer.Deferred[None]:
        old = self._server.get(contract_txid)
        if old is None:
            return defer.fail(UnknownChannel(contract_txid.hex()))
        try:
            check_payment(contract_txid, old.state.value, old.best_value, best_value)
        except StoreError:
            return defer.fail()
        self._server[contract_txid] = replace_fields(old, best_value=best_value, best_signature=signature)
        return defer.succeed(None)

    def transition_server(self, contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                          /, **changes: object) -> defer.Deferred[ServerChannelRecord]:
        def check(stored: ServerChannelRecord) -> None:
            check_server_cas(contract_txid, stored.state, expected, new, changes)

        return _transition(self._server, contract_txid, new, changes, check)

    def prune_server_channel(self, contract_txid: bytes, best_value: int) -> defer.Deferred[None]:
        old = self._server.get(contract_txid)
        if old is None:
            return defer.fail(UnknownChannel(contract_txid.hex()))
        try:
            check_prune(contract_txid, old.state.value, old.settlement_tx, old.best_value, best_value)
        except StoreError:
            return defer.fail()
        del self._server[contract_txid]
        return defer.succeed(None)

    def server_channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ServerChannelRecord]]:
        return defer.succeed(self._server.get(contract_txid))

    def server_channels(
        self, states: Optional[Collection[ServerChannelState]] = None, limit: Optional[int] = None, offset: int = 0
    ) -> defer.Deferred[list[ServerChannelRecord]]:
        check_page(limit, offset)
        found = [r for r in self._server.values() if states is None or r.state in states]
        if limit is not None:
            found = found[max(0, len(found) - offset - limit):max(0, len(found) - offset)]
        return defer.succeed(found)

    def server_totals(self) -> defer.Deferred[ServerTotals]:
        return defer.succeed(totals_of(list(self._server.values())))

    def add_client_channel(self, record: ClientChannelRecord) -> defer.Deferred[None]:
        if record.contract_txid in self._client:
            return defer.fail(DuplicateChannel(record.contract_txid.hex()))
        self._client[record.contract_txid] = record
        return defer.succeed(None)

    def record_client_change(self, contract_txid: bytes, client_change: int) -> defer.Deferred[None]:
        old = self._client.get(contract_txid)
        if old is None:
            return defer.fail(UnknownChannel(contract_txid.hex()))
        try:
            check_change(contract_txid, old.state.value, old.client_change, client_change)
        except StoreError:
            return defer.fail()
        self._client[contract_txid] = replace_fields(old, client_change=client_change)
        return defer.succeed(None)

    def transition_client(self, contract_txid: bytes, expected: ClientChannelState, new: ClientChannelState,
                          /, **changes: object) -> defer.Deferred[ClientChannelRecord]:
        def check(stored: ClientChannelRecord) -> None:
            check_client_cas(contract_txid, stored.state, expected, new, changes)

        return _transition(self._client, contract_txid, new, changes, check)

    def client_channel(self, contract_txid: bytes) -> defer.Deferred[Optional[ClientChannelRecord]]:
        return defer.succeed(self._client.get(contract_txid))

    def client_channels(self, state: Optional[ClientChannelState] = None) -> defer.Deferred[list[ClientChannelRecord]]:
        return defer.succeed([r for r in self._client.values() if state is None or r.state is state])

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)
