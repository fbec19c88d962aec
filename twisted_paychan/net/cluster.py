"""
One node of several on one PostgreSQL store (issue #13, ``doc/cluster.md``): what
``twistd paychan --store postgresql://...`` adds to a server, put together in one place so
``tap.py`` only calls it.

- ``SharedChannelKeys`` (``wallet.shared_keys``): channel keys from the seed every node is
  given, at paths the database hands out, so any node can settle any channel;
- ``FencedOwnership`` (``store.ownership``): one connection writes a channel's b, cluster-wide;
- ``DutyRoster`` (``net.duty``): each channel's expiry duty on one live node, taken over from a
  dead one within ``--duty-takeover`` seconds.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_paychan.chain.interfaces import IWallet
from twisted_paychan.net.duty import DEFAULT_TAKEOVER, DutyRoster
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.store.ownership import FencedOwnership
from twisted_paychan.store.postgres import PostgresChannelStore
from twisted_paychan.wallet.base import BaseWallet
from twisted_paychan.wallet.shared_keys import SharedChannelKeys, seed_fingerprint


def new_node_id() -> str:
    """A name for this process in ``cluster_nodes``: host, pid and a random part (a restarted
    process is a new node; its old self's duties are taken over like a dead node's)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def shares_keys(wallet: object) -> bool:
    """Whether channel keys can come from the wallet's seed (``wallet.shared_keys``)."""
    return isinstance(wallet, BaseWallet) and wallet.has_seed


def check_cluster_seed(url: str, conninfo: str, wallet: object) -> None:
    """Blocking, at start (before anything listens, before the store's thread): the wallet's
    seed is the cluster's, or recorded as it if the database has none. ``StoreUnusable`` (one
    line) otherwise, or when the database cannot say. A wallet without a seed is not checked
    (its keys are not shared: ``ClusterNode`` warns)."""
    import psycopg

    from twisted_paychan.store.location import StoreUnusable, masked

    if not shares_keys(wallet):
        return
    assert isinstance(wallet, BaseWallet)
    mine = seed_fingerprint(wallet)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("INSERT INTO cluster_meta (name, value) VALUES ('seed', %s) ON CONFLICT (name) DO NOTHING",
                         (mine,))
            row = conn.execute("SELECT value FROM cluster_meta WHERE name = 'seed'").fetchone()
    except psycopg.Error as e:
        raise StoreUnusable(f"cannot check the wallet seed at {masked(url)}: {str(e).strip()}") from None
    if row is None or row[0] != mine:
        raise StoreUnusable(f"this node's wallet seed (fingerprint {mine}) is not the cluster's "
                            f"({row[0] if row else '?'}): every node must be given the same words")


class ClusterNode:
    """The cluster's parts for one server; ``wallet`` is what the channel manager gets."""

    log = Logger()

    def __init__(self, store: PostgresChannelStore, wallet: IWallet, clock: IReactorTime,
                 node_id: str, takeover: float = DEFAULT_TAKEOVER) -> None:
        self.store = store
        self.clock = clock
        self.node_id = node_id
        self.takeover = takeover
        self.wallet: IWallet = wallet
        if shares_keys(wallet):
            assert isinstance(wallet, BaseWallet)
            self.wallet = SharedChannelKeys(wallet, store, node_id)
        else:
            self.log.warn("cluster: the wallet has no seed to share: this node's new channels can be settled "
                          "only by a node with its wallet's keys")
        self.ownership = FencedOwnership(store, node_id)
        self.roster: Optional[DutyRoster] = None

    def attach(self, manager: ServerChannelManager) -> None:
        """Make ``manager`` write payments fenced and look after only its duties."""
        manager.ownership = self.ownership
        self.roster = DutyRoster(self.store, manager, self.clock, self.node_id, self.takeover, self.ownership)

    def start(self, _: Any = None) -> defer.Deferred[None]:
        """Take the lease and the first duties; the manager starts once this has fired."""
        assert self.roster is not None, "attach a manager first"
        self.log.info("cluster: node {node}, expiry duty taken over within {t:g} s of a node's death",
                      node=self.node_id, t=self.takeover)
        return self.roster.start()

    def stop(self) -> defer.Deferred[None]:
        """Give the lease and the duties back (the store is closed after this); a database
        that does not answer only delays the others' takeover to ``takeover``."""
        if self.roster is None:
            return defer.succeed(None)

        def failed(f: Any) -> None:
            self.log.warn("cluster: giving node {node}'s duties back failed: {why}", node=self.node_id,
                          why=f.getErrorMessage())

        return self.roster.release().addErrback(failed)
