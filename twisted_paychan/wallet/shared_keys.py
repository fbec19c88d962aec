"""
Server channel keys every node of a cluster can sign with, never stored in the clear
(issue #13, ``doc/cluster.md``).

Every node is given the same wallet seed (the same BIP39 words). A new channel's server key is
the seed's key at ``m/84'/c'/0'/2/i`` (the ``CHANNEL`` branch of ``wallet.hd``) for an index
``i`` handed out by one database sequence, at ``CLUSTER_BASE`` and above: two nodes never hand
out the same index, and a single server's own channel keys (indices counted from 0 by its
wallet) never meet them. The database stores the path beside the public key (``channel_keys``),
never the key: a node that did not create a channel reads the path and derives the key again.

``SharedChannelKeys`` wraps the node's wallet for ``ServerChannelManager`` only (the API and
the CLI keep the wallet itself): channel keys come from the seed and the sequence, everything
else is the wallet's. A key it has not met is looked up when a settlement is about to be built
(``settlement_payout_script``, which the manager asks right before ``signer_for``). Keys from
before the cluster, held by one node's wallet, are still found there (``signer_for`` falls back
to the wallet), so that node alone can settle those channels.

A wallet without a seed (random keys, or a backend whose keys live elsewhere, such as a remote
signer every node reaches) is not wrapped: its keys are wherever that backend keeps them.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_paychan.chain.interfaces import ISigner, IWallet
from twisted_paychan.chain.types import Balance, FundedTransaction, Utxo
from twisted_paychan.wallet.base import BaseWallet
from twisted_paychan.wallet.hd import Branch
from twisted_paychan.wallet.keys import KeyPurpose, WalletKey

if TYPE_CHECKING:
    from twisted_paychan.store.postgres import _Conn

T = TypeVar("T")


class SqlRunner(Protocol):
    """Where the key paths live: ``PostgresChannelStore.submit`` (the wallet does not import
    the store; the store does not know about keys)."""

    def submit(self, op: Callable[["_Conn"], T], write: bool = True) -> defer.Deferred[T]: ...

#: The first channel-branch index the cluster hands out (half the non-hardened range): far
#: above any count a single wallet reaches.
CLUSTER_BASE = 1 << 30
#: The index whose public key fingerprints the seed (never a channel's: the sequence starts at 1).
_FINGERPRINT_INDEX = CLUSTER_BASE


def seed_fingerprint(wallet: BaseWallet) -> str:
    """A short hash identifying the seed (not the seed: a hash of one derived public key)."""
    key = wallet.derive(Branch.CHANNEL, _FINGERPRINT_INDEX, KeyPurpose.CHANNEL, None)
    return hashlib.sha256(key.public_key).hexdigest()[:16]


@implementer(IWallet)
class SharedChannelKeys:
    """See the module docstring."""

    log = Logger()

    def __init__(self, wallet: BaseWallet, store: SqlRunner, node_id: str) -> None:
        self.wallet = wallet
        self.store = store
        self.node_id = node_id
        self.network = wallet.network
        #: Keys derived here: lent to a handshake and not yet named by a channel.
        self._provisional: dict[bytes, WalletKey] = {}
        #: Keys of stored channels, derived again from their paths.
        self._kept: dict[bytes, WalletKey] = {}

    def _derive(self, path: str) -> WalletKey:
        prefix, index = path.rsplit("/", 1)
        if prefix != Branch.CHANNEL.path(self.network, 0).rsplit("/", 1)[0] or int(index) < CLUSTER_BASE:
            raise ValueError(f"a channel key path outside the cluster's range: {path}")
        return self.wallet.derive(Branch.CHANNEL, int(index), KeyPurpose.CHANNEL, None)

    # -- channel keys ---------------------------------------------------------------------------

    def provisional_channel_key(self) -> defer.Deferred[ISigner]:
        """A key at the next index of the database's sequence; its path is stored with it now
        (a handshake that never becomes a channel leaves one unused row, no secret)."""
        wallet, network, node = self.wallet, self.network, self.node_id

        def op(conn: "_Conn") -> WalletKey:
            row = conn.execute("SELECT nextval('channel_key_index')").fetchone()
            assert row is not None
            key = wallet.derive(Branch.CHANNEL, CLUSTER_BASE + int(row[0]), KeyPurpose.CHANNEL, None)
            conn.execute("INSERT INTO channel_keys (public_key, path, node_id) VALUES (%s, %s, %s)",
                         (key.public_key, key.path, node))
            return key

        def lent(key: WalletKey) -> ISigner:
            self._provisional[key.public_key] = key
            signer: ISigner = key.signer()
            return signer

        return self.store.submit(op).addCallback(lent)

    def keep_channel_key(self, public_key: bytes) -> Optional[defer.Deferred[None]]:
        """Its path is in the database already (``provisional_channel_key``): nothing to write.
        A key of the node's own wallet is kept by that wallet (whose write may still be under
        way: its Deferred, as ``IWallet.keep_channel_key`` says)."""
        public_key = bytes(public_key)
        key = self._provisional.pop(public_key, None)
        if key is not None:
            self._kept[public_key] = key
        elif public_key not in self._kept:
            return self.wallet.keep_channel_key(public_key)
        return None

    def forget_channel_key(self, public_key: bytes) -> None:
        if self._provisional.pop(bytes(public_key), None) is None:
            self.wallet.forget_channel_key(public_key)

    def signer_for(self, public_key: bytes) -> ISigner:
        key = self._kept.get(bytes(public_key))
        if key is not None:
            signer: ISigner = key.signer()
            return signer
        return self.wallet.signer_for(public_key)

    def load_channel_key(self, contract_txid: bytes) -> defer.Deferred[bool]:
        """Derive the server key of a stored channel from the path the database holds for it;
        False if it has none (a key of one node's own wallet)."""
        def op(conn: "_Conn") -> Optional[str]:
            row = conn.execute("SELECT k.path FROM channel_keys k JOIN server_channels c "
                               "ON c.server_key = k.public_key WHERE c.contract_txid = %s", (contract_txid,)).fetchone()
            return None if row is None else str(row[0])

        def derived(path: Optional[str]) -> bool:
            if path is None:
                return False
            key = self._derive(path)
            self._kept[key.public_key] = key
            return True

        return self.store.submit(op, write=False).addCallback(derived)

    def settlement_payout_script(self, contract_txid: bytes) -> defer.Deferred[bytes]:
        """The wallet's, once the channel's key is at hand (the manager signs right after)."""
        d = self.load_channel_key(contract_txid)
        return d.addCallback(lambda _: self.wallet.settlement_payout_script(contract_txid))

    # -- the rest is the wallet's ------------------------------------------------------------

    def new_channel_key(self) -> defer.Deferred[ISigner]:
        return self.wallet.new_channel_key()

    def new_address(self, *args: Any) -> defer.Deferred[str]:
        return self.wallet.new_address(*args)

    def payout_script(self) -> defer.Deferred[bytes]:
        return self.wallet.payout_script()

    def balance(self) -> defer.Deferred[Balance]:
        return self.wallet.balance()

    def coins(self) -> defer.Deferred[list[Utxo]]:
        return self.wallet.coins()

    def fund(self, script_pubkey: bytes, amount: int, fee_rate: int) -> defer.Deferred[FundedTransaction]:
        return self.wallet.fund(script_pubkey, amount, fee_rate)

    def sweep(self, script_pubkey: bytes, fee_rate: int) -> defer.Deferred[FundedTransaction]:
        return self.wallet.sweep(script_pubkey, fee_rate)

    def release(self, funded: FundedTransaction) -> None:
        self.wallet.release(funded)

    def reclaim(self, funded_txid: bytes, fee_rate: int) -> defer.Deferred[FundedTransaction]:
        return self.wallet.reclaim(funded_txid, fee_rate)

    def reserved_transactions(self) -> list[FundedTransaction]:
        return self.wallet.reserved_transactions()
