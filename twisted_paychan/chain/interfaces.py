"""
The backend roles a payment channel needs, one zope interface each.

Every asynchronous result is a Deferred (it may already have fired: in-memory doubles and the
embedded node answer synchronously). Failures are Failures wrapping the exceptions named here,
never bare strings. Hashes are internal-order bytes (see ``chain.types``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Collection, Optional, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from twisted_paychan.chain.types import (
    Balance,
    BlockId,
    ChainTip,
    FundedTransaction,
    OutPoint,
    OutputScan,
    SpendEvent,
    TxStatus,
    Utxo,
)

if TYPE_CHECKING:
    from twisted_paychan.chain.feed import ChainEvent


class ICancellable(Interface):
    def cancel() -> None:
        """Stop the notification; calling it twice is harmless."""


class ITransactionWatch(ICancellable):
    def sync() -> Deferred[None]:
        """Fires once every change the chain knows of now has been handed to the callback
        (the memory and embedded chains deliver their queue; the RPC chain polls first)."""


class IChain(Interface):
    """A view of the block chain and a way onto it."""

    def broadcast(tx: bytes) -> Deferred[bytes]:
        """Submit a fully signed transaction.

        Fires with its txid once the node has accepted it into its mempool (or already had it,
        in the mempool or confirmed); fails with ``BroadcastRejected`` carrying a readable
        reason otherwise.
        """

    def tx_status(txid: bytes) -> Deferred[TxStatus]:
        """Unknown, in the mempool, or confirmed with N confirmations."""

    def get_transaction(txid: bytes) -> Deferred[Optional[bytes]]:
        """The raw transaction, if the chain knows it (mempool or a block it indexes)."""

    def tip() -> Deferred[ChainTip]:
        """Height, hash, time and median-time-past of the best block."""

    def unspent_outputs(script_pubkey: bytes) -> Deferred[list[Utxo]]:
        """Unspent outputs paying exactly this script, confirmed and in the mempool, minus the
        ones the mempool already spends."""

    def scan_outputs(scripts: Collection[bytes]) -> Deferred[OutputScan]:
        """The confirmed unspent outputs paying any of ``scripts`` (the mempool aside: neither
        its outputs nor its spends), and the block they are as of. One pass over the UTXO set
        however many scripts: a wallet's one full scan, when it is created or restored."""

    def watch_transactions(callback: Callable[[ChainEvent], Any], since: Sequence[BlockId] = ()) -> ITransactionWatch:
        """Follow the chain from ``since`` (blocks the caller holds, newest first; empty: from
        the tip): ``callback(event)`` for each block connected or disconnected, with its
        transactions, and each mempool change (``chain.feed`` says which events, in which
        order). Never called re-entrantly from this method."""

    def watch_spend(outpoint: OutPoint, callback: Callable[[SpendEvent], Any]) -> ICancellable:
        """Call ``callback(SpendEvent)`` when ``outpoint`` is spent (mempool or block), and
        again whenever the spending transaction's status changes (confirmation, reorg). If it is
        already spent, the first call comes soon after (never re-entrantly from this method)."""

    def watch_blocks(callback: Callable[[ChainTip], Any]) -> ICancellable:
        """Call ``callback(ChainTip)`` for every new best block."""


class ISigner(Interface):
    """Signs with one key that stays inside the wallet. Synchronous, because a payment's
    signature is on the hot path and never needs I/O once the key is loaded."""

    public_key = Attribute("The SEC-encoded public key (bytes, 33-byte compressed).")

    def sign(digest: bytes) -> bytes:
        """A low-S DER signature (no sighash byte) over a 32-byte digest, deterministic
        (RFC 6979)."""


class IPreparedSigner(ISigner):
    """An ISigner whose key is in another process (``wallet.remote``): the server's connection
    fetches the v1 refund signature (asynchronously) before its machine calls ``sign`` for it."""

    def prepare_refund(client_key: bytes, expiry: int, refund: bytes) -> Deferred[None]:
        """Fetch the signature of this v1 refund, so that ``sign`` finds it at once; never fails
        (a refusal is kept, and ``sign`` raises it as the ERROR the client gets)."""


class IWallet(Interface):
    """Keys and coins of one party."""

    def new_channel_key() -> Deferred[ISigner]:
        """A fresh key for a channel, stored durably before it is returned."""

    def provisional_channel_key() -> Deferred[ISigner]:
        """A fresh key for a channel that may never exist, held in memory only: stored by
        ``keep_channel_key`` once a channel names it, dropped by ``forget_channel_key`` (or by a
        restart) otherwise. A handshake that ends without a channel costs nothing durable."""

    def keep_channel_key(public_key: bytes) -> "Optional[Deferred[None]]":
        """Store a provisional key durably (a key already stored stays): before returning None,
        or before the Deferred it returns fires (a server's wallet that commits in a thread,
        ``wallet.key_commits``); KeyError for a key this wallet neither holds nor lent."""

    def forget_channel_key(public_key: bytes) -> None:
        """Drop a provisional key that no channel came to name; a stored key is never dropped."""

    def signer_for(public_key: bytes) -> ISigner:
        """The signer of a key this wallet holds; raises KeyError if it does not hold it."""

    def new_address() -> Deferred[str]:
        """A fresh receive address (for funding the wallet), stored before it is returned."""

    network = Attribute("The ``bitcoin.addresses.Network`` its addresses are for.")

    def payout_script() -> Deferred[bytes]:
        """A scriptPubKey of ours for change (the same one each time)."""

    def settlement_payout_script(contract_txid: bytes) -> Deferred[bytes]:
        """A scriptPubKey of ours for the settlement of the channel whose contract is
        ``contract_txid``: a fresh one per channel (the same one again for the same channel),
        stored before it is returned, so the settlement paying it can never be lost track of."""

    def balance() -> Deferred[Balance]:
        """Confirmed and unconfirmed value of the coins the wallet may spend."""

    def coins() -> Deferred[list[Utxo]]:
        """The wallet's spendable coins."""

    def fund(script_pubkey: bytes, amount: int, fee_rate: int) -> Deferred[FundedTransaction]:
        """Build and sign a transaction paying ``amount`` to ``script_pubkey`` as output 0, with
        change back to the wallet, at ``fee_rate`` sat/kB. Its inputs are reserved, so a
        concurrent ``fund`` will not pick them, until ``release`` or until the chain shows them
        spent. Fails with ``InsufficientFunds``."""

    def sweep(script_pubkey: bytes, fee_rate: int) -> Deferred[FundedTransaction]:
        """Like ``fund``, but spending every spendable coin into one output to
        ``script_pubkey``, worth their total minus the fee; reserved the same way. Fails with
        ``InsufficientFunds`` when that output would be dust."""

    def release(funded: FundedTransaction) -> None:
        """Give back the coins of a funded transaction that will never be broadcast."""

    def reclaim(funded_txid: bytes, fee_rate: int) -> Deferred[FundedTransaction]:
        """Spend the coins of a funded transaction that never reached a chain (a contract
        whose opening failed) back to this wallet, paying more than its fee; the coins are
        reserved for the new transaction from then on. Fails with ``ReclaimImpossible`` when
        they are already spent."""

    def reserved_transactions() -> list[FundedTransaction]:
        """Funded transactions still holding coins (a crash between funding a contract and
        storing its channel leaves one behind: ``release`` it unless the chain knows it)."""


class IFeeEstimator(Interface):
    def fee_rate(target: str) -> Deferred[int]:
        """Fee rate in sat/kB for a named target (``"fast"``: next blocks, ``"normal"``,
        ``"economy"``), never below the floor the estimator was configured with."""


class InsufficientFunds(Exception):
    """The wallet cannot pay the requested amount plus fees."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"insufficient funds: need {needed} sat, have {available} sat")
        self.needed = needed
        self.available = available
