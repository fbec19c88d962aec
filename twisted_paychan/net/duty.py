"""
Expiry duty on exactly one live node per channel (issue #13, ``doc/cluster.md``).

A channel's *duty* is what keeps it safe with nobody connected: the settle-before-expiry timer,
the watches on its contract, the retries of a stuck settlement, the rebroadcasts of a pending
one. ``server_channels.duty_node`` names the node that does it: the node that stored the
channel, until that node is dead for the others.

Each node (``DutyRoster``) renews a lease in ``cluster_nodes`` every ``takeover / 3`` seconds,
valid ``2 * takeover / 3`` seconds of the database's clock, and in the same transaction claims
the duty of every unfinished channel whose ``duty_node`` has no live lease (or none at all),
and reads the full list of its own. Two nodes claiming together: PostgreSQL's row lock makes the
second ``UPDATE`` wait and then find the channel's node alive, so one wins. A node that dies
right after a renewal is dead ``2 * takeover / 3`` later, and another node's next renewal, at
most ``takeover / 3`` after that, takes its channels: within ``takeover`` (30 s by default,
``--duty-takeover``).

What the roster does with the list: a channel new on it is handed to the manager
(``take_duty``: timers armed, watches set, as at start); one gone from it (another node took it,
because this node's lease lapsed) is stopped (``drop_duty``). A node that cannot renew (the
database unreachable) stops every duty once its lease, by its own clock, has run out: by then
another node may have them. Time is the injected ``IReactorTime``'s.

Exactly once is the aim, not what safety rests on: every state change is a compare-and-set,
and a settlement is stored (OPEN -> SETTLING, with its transaction) before it is broadcast. Two
nodes settling one channel at once (a duty holder cut off from the others just as its lease
lapsed) get one stored settlement: the loser's transition fails, it reads the record back and
broadcasts the stored transaction, never one of its own with other contents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState

if TYPE_CHECKING:
    from twisted_paychan.net.server_manager import ServerChannelManager
    from twisted_paychan.store.ownership import FencedOwnership
    from twisted_paychan.store.postgres import PostgresChannelStore, _Conn

#: Seconds until another node takes a dead node's duties over (``--duty-takeover``).
DEFAULT_TAKEOVER = 30.0

#: The states that need a node's timers or watches (the others are finished).
_ALIVE = tuple(s.value for s in (ServerChannelState.OPEN, ServerChannelState.SETTLING, ServerChannelState.STUCK))

_RENEW_SQL = (
    "INSERT INTO cluster_nodes (node_id, lease_until) VALUES (%s, now() + make_interval(secs => %s)) "
    "ON CONFLICT (node_id) DO UPDATE SET lease_until = EXCLUDED.lease_until"
)
_CLAIM_SQL = (
    "UPDATE server_channels SET duty_node = %s WHERE state = ANY(%s) AND (duty_node IS NULL OR duty_node NOT IN "
    "(SELECT node_id FROM cluster_nodes WHERE lease_until > now())) RETURNING contract_txid, duty_node"
)
_MINE_SQL = "SELECT contract_txid FROM server_channels WHERE duty_node = %s AND state = ANY(%s)"
#: Nodes dead for a day are forgotten (their rows only say who once was).
_FORGET_SQL = "DELETE FROM cluster_nodes WHERE lease_until < now() - interval '1 day'"


class DutyRoster:
    """One node's lease and the channels whose duty it holds; see the module docstring."""

    log = Logger()

    def __init__(self, store: "PostgresChannelStore", manager: "ServerChannelManager", clock: IReactorTime,
                 node_id: str, takeover: float = DEFAULT_TAKEOVER,
                 ownership: Optional["FencedOwnership"] = None) -> None:
        if takeover <= 0:
            raise ValueError("the duty takeover time must be positive")
        self.store = store
        self.manager = manager
        self.clock = clock
        self.node_id = node_id
        self.takeover = takeover
        self.ownership = ownership
        #: The channels whose duty this node holds, as of the last renewal.
        self.duties: set[bytes] = set()
        #: When this node's lease runs out, by its own clock (None: it holds none).
        self.lease_until: Optional[float] = None
        self._call: Optional[IDelayedCall] = None
        self._running = False
        self._renewing: Optional[defer.Deferred[None]] = None

    @property
    def interval(self) -> float:
        return self.takeover / 3

    @property
    def lease(self) -> float:
        return 2 * self.takeover / 3

    def has_duty(self, record: ServerChannelRecord) -> bool:
        """For ``ServerChannelManager.has_duty``: which channels its ``start`` looks after."""
        return record.contract_txid in self.duties

    def start(self) -> defer.Deferred[None]:
        """Renew the lease and claim orphaned duties now, then every ``interval`` seconds. The
        manager's ``start`` comes after this has fired, and loads the channels of ``duties``
        (none if the database could not be reached: they come with a later renewal)."""
        self._running = True
        self.manager.has_duty = self.has_duty

        def failed(f: Failure) -> None:  # the renewals go on; the duties come with the first that works
            self.log.warn("cluster: node {node}'s first lease renewal failed: {why}", node=self.node_id,
                          why=f.getErrorMessage())

        d = self.renew(hand_over=False)
        d.addErrback(failed)
        d.addCallback(lambda _: self._schedule())
        return d

    def release(self) -> defer.Deferred[None]:
        """A clean stop: end this node's lease and give its duties back now, so the other
        nodes take them at their next renewal rather than after ``takeover``."""
        self.stop()
        node = self.node_id

        def op(conn: "_Conn") -> None:
            conn.execute("UPDATE cluster_nodes SET lease_until = now() WHERE node_id = %s", (node,))
            conn.execute("UPDATE server_channels SET duty_node = NULL WHERE duty_node = %s", (node,))

        self.duties = set()
        return self.store.submit(op)

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        if self._running:
            self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        if self._renewing is not None:  # the database has not answered the last one yet
            self._lapse_if_due()
            self._schedule()
            return

        def failed(f: Failure) -> None:
            self.log.warn("cluster: renewing node {node}'s lease failed: {why}", node=self.node_id,
                          why=f.getErrorMessage())
            self._lapse_if_due()

        d = self.renew()
        d.addErrback(failed)
        d.addBoth(lambda _: self._schedule())

    def renew(self, hand_over: bool = True) -> defer.Deferred[None]:
        """One renewal (see the module docstring); ``hand_over``: tell the manager of duties
        gained and lost."""
        if self._renewing is not None:
            return self._renewing  # the last one is still in the database
        asked_at = self.clock.seconds()
        node, lease = self.node_id, self.lease

        def op(conn: "_Conn") -> tuple[list[bytes], set[bytes]]:
            conn.execute(_RENEW_SQL, (node, lease))
            claimed = [bytes(r[0]) for r in conn.execute(_CLAIM_SQL, (node, list(_ALIVE))).fetchall()]
            conn.execute(_FORGET_SQL)
            mine = {bytes(r[0]) for r in conn.execute(_MINE_SQL, (node, list(_ALIVE))).fetchall()}
            return claimed, mine

        def renewed(result: tuple[list[bytes], set[bytes]]) -> None:
            self._renewing = None
            claimed, mine = result
            # Valid from when it was asked: the commit came later, so this errs on the short side.
            self.lease_until = asked_at + lease
            for txid in claimed:
                self.log.info("cluster: node {node} takes over channel {txid}'s expiry duty", node=node,
                              txid=display_hex(txid))
            gained, lost = mine - self.duties, self.duties - mine
            self.duties = mine
            if hand_over and self._running:  # not after a stop: the manager is stopping too
                self._hand_over(gained, lost)
            if self.ownership is not None:
                self.ownership.check_held().addErrback(
                    lambda f: self.log.warn("cluster: checking held channels failed: {why}", why=f.getErrorMessage()))

        def failed(f: Failure) -> Failure:
            self._renewing = None
            return f

        running = self.store.submit(op).addCallbacks(renewed, failed)
        self._renewing = running
        return running

    def _hand_over(self, gained: set[bytes], lost: set[bytes]) -> None:
        for txid in lost:
            self.log.info("cluster: channel {txid}'s expiry duty is another node's now", txid=display_hex(txid))
            self.manager.drop_duty(txid)
        for txid in gained:
            self.manager.take_duty(txid).addErrback(self._take_failed, txid)

    def _take_failed(self, f: Failure, txid: bytes) -> None:
        self.log.failure("cluster: taking channel {txid}'s duty failed", f, txid=display_hex(txid))

    def _lapse_if_due(self) -> None:
        """Renewals fail: once the lease has run out by this node's clock, another node may hold
        these duties, so this one lets them go (they come back with the next renewal if nobody
        took them)."""
        if self.lease_until is None or self.clock.seconds() < self.lease_until or not self.duties:
            return
        self.log.warn("cluster: node {node}'s lease ran out with the database unreachable; stopping the "
                      "expiry duty of {n} channel(s)", node=self.node_id, n=len(self.duties))
        lost, self.duties = self.duties, set()
        self.lease_until = None
        self._hand_over(set(), lost)
