"""
Who may write a server channel's b: one connection at a time, across every node sharing the
store (issue #13, ``doc/cluster.md``).

``ServerChannelManager`` already keeps one writer of b among its own connections (probation,
takeover). Across nodes that is not enough: node A's manager cannot see node B's connections.
So every payment is written through an ``IChannelOwnership``:

- ``LocalOwnership`` (memory and SQLite stores, one process): a payment is the store's
  ``record_payment``; the manager's own rules are the whole of it.
- ``FencedOwnership`` (PostgreSQL): a fencing token per channel, ``server_channels.owner_token``.
  A connection's first payment *claims* the channel: the one statement that stores it also
  increments the token, and matches only while b is still the b the connection was told when it
  attached (so a connection that resumed before another paid cannot take the channel over with
  a stale view, the rule the manager applies to its own connections). Every later payment of
  that connection is an ``UPDATE ... WHERE owner_token = <its token>``: once another node's
  connection has claimed the channel, the old holder's next write matches nothing, fails with
  ``OwnershipLost`` (a ``ChannelNotOpen``: the connection sends ERROR{BAD_TRANSACTION} and
  closes), and nothing is acknowledged that was not stored under the holder's own token.

Why a token in the row and not a lock: a row lock or an advisory lock lives as long as a
session, and the store's session is shared by every channel of the node and re-made after a
lost connection; a lock would either serialise the node's channels or vanish silently with the
session. The token is checked by the same statement that writes b, in the same commit, so no
window exists between "am I still the owner?" and the write, whatever happened to sessions,
nodes or networks in between.

``check_held`` (called by ``net.duty`` at each heartbeat) closes, within one heartbeat, a
connection whose channel another node claimed, instead of waiting for its next payment.

``store_settlement``: two nodes that freeze one channel at once (OPEN -> SETTLING is a
compare-and-set: one wins, the other reads the frozen record back) would each build a
settlement of the same b, to its own payout address, and each store it over the other's. So a
settlement is stored only while the stored one is still the one it was built on: the second
node's write fails with ``SettlementStoredElsewhere`` and the manager carries on with the stored
transaction, broadcasting that one, never its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol, cast

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.store import rules
from twisted_paychan.store.interfaces import (
    ChannelNotOpen,
    IChannelStore,
    StoreError,
    TransitionConflict,
    UnknownChannel,
)
from twisted_paychan.store.rules import SERVER_PAYABLE, check_payment, check_server_cas
from twisted_paychan.store.sqlite import _SERVER_COLUMNS, _server_record

if TYPE_CHECKING:
    from twisted_paychan.store.postgres import PostgresChannelStore, _Conn


class Holder(Protocol):
    """What ownership needs of a connection: to close it when another node took its channel."""

    @property
    def close_reason(self) -> object: ...

    def close(self) -> None: ...


class OwnershipLost(ChannelNotOpen):
    """Another connection, on this node or another, claimed the channel since this one did:
    the payment was not stored."""

    def __init__(self, contract_txid: bytes, owner: Optional[str]) -> None:
        super().__init__(contract_txid, f"taken over by a connection on node {owner or '?'}")
        self.owner = owner


class SettlementStoredElsewhere(StoreError):
    """Another machine (on another node) stored a settlement for this channel after this one
    started building its own: the stored one stands, and this one is never stored."""


class IChannelOwnership(Interface):
    """The seam every server payment is written through (see the module docstring)."""

    def attached(contract_txid: bytes, holder: Holder, best_value: int) -> None:
        """``holder`` now serves the channel, having been told b = ``best_value``."""

    def record_payment(contract_txid: bytes, holder: Holder, best_value: int,
                       signature: bytes) -> defer.Deferred[None]:
        """Store a payment of ``holder`` durably, as ``IChannelStore.record_payment``, and only
        while ``holder`` owns the channel; ``OwnershipLost`` otherwise."""

    def detached(holder: Holder) -> None:
        """``holder`` has closed."""

    def store_settlement(contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                         changes: dict[str, object], built_on: Optional[bytes]) -> defer.Deferred[ServerChannelRecord]:
        """``IChannelStore.transition_server`` for a transition that stores a settlement built
        while the stored one was ``built_on``; ``SettlementStoredElsewhere`` if another is stored
        now (a fee bump replaces the one it was built on; a second node's never replaces a
        first's)."""


@implementer(IChannelOwnership)
class LocalOwnership:
    """One process owns every channel of its store (memory, SQLite)."""

    def __init__(self, store: IChannelStore) -> None:
        self.store = store

    def attached(self, contract_txid: bytes, holder: Holder, best_value: int) -> None:
        pass

    def record_payment(self, contract_txid: bytes, holder: Holder, best_value: int,
                       signature: bytes) -> defer.Deferred[None]:
        return self.store.record_payment(contract_txid, best_value, signature)

    def detached(self, holder: Holder) -> None:
        pass

    def store_settlement(self, contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                         changes: dict[str, object], built_on: Optional[bytes]) -> defer.Deferred[ServerChannelRecord]:
        # One process, one machine per channel: nobody else builds a settlement for it.
        return self.store.transition_server(contract_txid, expected, new, **changes)


_CLAIM_SQL = (
    "UPDATE server_channels SET best_value = %s, best_signature = %s, owner_token = owner_token + 1, "
    "owner_node = %s WHERE contract_txid = %s AND best_value <= %s AND best_value = %s "
    f"AND state = '{SERVER_PAYABLE.value}' RETURNING owner_token"
)
_FENCED_SQL = (
    "UPDATE server_channels SET best_value = %s, best_signature = %s "
    f"WHERE contract_txid = %s AND best_value <= %s AND state = '{SERVER_PAYABLE.value}' AND owner_token = %s"
)
_EXPLAIN_SQL = "SELECT best_value, state, owner_token, owner_node FROM server_channels WHERE contract_txid = %s"


@dataclass
class _Hold:
    contract_txid: bytes
    #: b as the holder was told it when it attached: its claim holds only if b is still that.
    told: int
    #: The fencing token its claim got; None until its first payment is stored.
    token: Optional[int] = None
    #: The claim in flight: payments asked for meanwhile are written after it, fenced.
    claiming: Optional[defer.Deferred[None]] = None
    waiting: list[defer.Deferred[None]] = field(default_factory=list)


@implementer(IChannelOwnership)
class FencedOwnership:
    """Fencing tokens in ``server_channels`` (see the module docstring); ``node_id`` is what
    the row names as the owner, for the logs and ``OwnershipLost``."""

    log = Logger()

    def __init__(self, store: "PostgresChannelStore", node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        self._held: dict[Holder, _Hold] = {}

    def attached(self, contract_txid: bytes, holder: Holder, best_value: int) -> None:
        self._held[holder] = _Hold(contract_txid, best_value)

    def detached(self, holder: Holder) -> None:
        self._held.pop(holder, None)

    def store_settlement(self, contract_txid: bytes, expected: ServerChannelState, new: ServerChannelState,
                         changes: dict[str, object], built_on: Optional[bytes]) -> defer.Deferred[ServerChannelRecord]:
        """The store's compare-and-set, also comparing the stored settlement with ``built_on``:
        two nodes that froze one channel at once both build a settlement (each its own payout
        address), and only the first stored may stand."""
        try:
            check_server_cas(contract_txid, expected, expected, new, changes)  # a bug of ours fails here
        except Exception as e:
            return defer.fail(e)
        update = (f"{rules.cas_update('server_channels', list(changes), '%s')} "
                  f"AND settlement_tx IS NOT DISTINCT FROM %s RETURNING {_SERVER_COLUMNS}")
        params = (new.value, *changes.values(), contract_txid, expected.value, built_on)

        def op(conn: "_Conn") -> ServerChannelRecord:
            row = conn.execute(cast(Any, update), params).fetchone()
            if row is not None:
                return _server_record(row)
            found = conn.execute("SELECT state FROM server_channels WHERE contract_txid = %s", (contract_txid,)).fetchone()
            if found is None:
                raise UnknownChannel(contract_txid.hex())
            if found[0] != expected.value:
                raise TransitionConflict(contract_txid, expected.value, found[0])
            raise SettlementStoredElsewhere(f"channel {contract_txid.hex()}: another settlement was stored first")

        return self.store.submit(op)

    def token(self, holder: Holder) -> Optional[int]:
        """The token ``holder``'s claim got (None before its first payment)."""
        hold = self._held.get(holder)
        return hold.token if hold is not None else None

    def record_payment(self, contract_txid: bytes, holder: Holder, best_value: int,
                       signature: bytes) -> defer.Deferred[None]:
        hold = self._held.get(holder)
        if hold is None or hold.contract_txid != contract_txid:
            return defer.fail(ChannelNotOpen(contract_txid, "not attached to this connection"))
        if hold.token is not None:
            return self._fenced(hold, best_value, signature)
        if hold.claiming is not None:
            # A pipelined payment behind the claim: written, fenced, once the claim is stored.
            d: defer.Deferred[None] = defer.Deferred()
            hold.waiting.append(d)
            return d.addCallback(lambda _: self._fenced(hold, best_value, signature))
        return self._claim(hold, best_value, signature)

    def _claim(self, hold: _Hold, best_value: int, signature: bytes) -> defer.Deferred[None]:
        txid, told, node = hold.contract_txid, hold.told, self.node_id

        def op(conn: "_Conn") -> int:
            row = conn.execute(_CLAIM_SQL, (best_value, signature, node, txid, best_value, told)).fetchone()
            if row is not None:
                return int(row[0])
            found = conn.execute(_EXPLAIN_SQL, (txid,)).fetchone()
            if found is not None and found[1] == SERVER_PAYABLE.value and best_value >= found[0] != told:
                raise StoreError(f"the channel was paid to {found[0]} on another connection since this one "
                                 f"resumed at {told}; resume again")
            rules.explain_refused(txid, found, lambda r: check_payment(txid, r[1], r[0], best_value),
                                  "the UPDATE refused a claiming payment")

        def claimed(token: int) -> None:
            hold.token = token
            self._release(hold, None)

        def refused(f: Any) -> Any:
            self._release(hold, f)
            return f

        d = self.store.submit(op).addCallbacks(claimed, refused)
        if not d.called:  # a store that refuses at once (closed) leaves nothing in flight
            hold.claiming = d
        return d

    def _release(self, hold: _Hold, failure: Any) -> None:
        hold.claiming = None
        waiting, hold.waiting = hold.waiting, []
        for d in waiting:
            if failure is None:
                d.callback(None)
            else:
                d.errback(failure)

    def _fenced(self, hold: _Hold, best_value: int, signature: bytes) -> defer.Deferred[None]:
        txid, token = hold.contract_txid, hold.token

        def op(conn: "_Conn") -> None:
            if conn.execute(_FENCED_SQL, (best_value, signature, txid, best_value, token)).rowcount == 1:
                return
            found = conn.execute(_EXPLAIN_SQL, (txid,)).fetchone()
            if found is not None and found[2] != token:
                raise OwnershipLost(txid, found[3])
            rules.explain_refused(txid, found, lambda r: check_payment(txid, r[1], r[0], best_value),
                                  "the UPDATE refused a fenced payment")

        return self.store.submit(op)

    def check_held(self) -> defer.Deferred[int]:
        """Close every connection whose channel another connection has claimed since (its
        token moved on); fires with how many were closed."""
        claimed = {h: hold for h, hold in self._held.items() if hold.token is not None}
        if not claimed:
            return defer.succeed(0)
        txids = list({hold.contract_txid for hold in claimed.values()})

        def op(conn: "_Conn") -> dict[bytes, tuple[int, Optional[str]]]:
            rows = conn.execute("SELECT contract_txid, owner_token, owner_node FROM server_channels "
                                "WHERE contract_txid = ANY(%s)", (txids,)).fetchall()
            return {bytes(r[0]): (int(r[1]), r[2]) for r in rows}

        def close_lost(tokens: dict[bytes, tuple[int, Optional[str]]]) -> int:
            closed = 0
            for holder, hold in claimed.items():
                now = tokens.get(hold.contract_txid)
                if now is None or now[0] == hold.token or holder.close_reason is not None:
                    continue
                self.log.info("channel {txid}: claimed by a connection on node {node}; closing this node's",
                              txid=hold.contract_txid[::-1].hex(), node=now[1] or "?")
                holder.close()
                closed += 1
            return closed

        return self.store.submit(op, write=False).addCallback(close_lost)
