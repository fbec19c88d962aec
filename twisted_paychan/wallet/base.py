"""
What every wallet does, whatever it stores things in.

:class:`BaseWallet` implements IWallet over state held in memory: keys, the coins last seen on
the chain, and the funded transactions whose coins are reserved. Subclasses make that state
durable by overriding the ``_persist_*`` hooks, each called *before* the in-memory state changes
and before any Deferred fires, so a caller never sees a key, an address or a funded transaction
that a crash could take back (STYLE: persist, then acknowledge). :class:`MemoryWallet` leaves
the hooks empty; :class:`SqliteWallet` writes through to SQLite. The one key a caller sees
unstored is a *provisional* channel key, lent to a server handshake and held in memory only
until a channel record names it (``keep_channel_key``) or the handshake ends
(``forget_channel_key``): a handshake that never becomes a channel leaves nothing behind.

Keys come from the wallet's seed (``hd``) when it has one, at the next index of their branch;
a wallet from before seeds makes random ones. Each settlement a server builds gets its own
payout key (:meth:`settlement_payout_script`), stored with the channel it was handed to before
the settlement can exist, so income is not one address history and a rebuilt settlement pays
the same script again.

Coins come from the chain, never from our own bookkeeping: the wallet scans the chain once
(``IChain.scan_outputs``, every receive and payout script and the P2PKH script of each *tracked*
channel key at once: a client's change after a settlement and its refund pay there, and they
are the wallet's money like any other coin; a server's channel keys receive nothing and are not
scanned), then follows it block by block and through the mempool (``wallet.follow``), undoing
a reorganisation. It follows from :meth:`start` on, and catches up on demand: ``balance``,
``coins`` and ``fund`` first take in what the chain has said since (:meth:`refresh`).

A coin is *spendable* when it is confirmed (a coinbase also mature), or unconfirmed but created
by a transaction this wallet funded (our own change), and not reserved. A reservation lasts
until ``release`` or until the chain no longer lists the coin as unspent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_paychan.bitcoin.addresses import Network, script_to_address
from twisted_paychan.chain.interfaces import ISigner
from twisted_paychan.chain.types import Balance, FundedTransaction, OutPoint, OutputScan, Utxo, display_hex
from twisted_paychan.constants import COINBASE_MATURITY, FEE_RATE_FLOOR, MAX_MONEY
from twisted_paychan.wallet.backends import IServedWallet
from twisted_paychan.wallet.coinselect import (
    P2PKH_INPUT_WEIGHT,
    P2WPKH_INPUT_WEIGHT,
    Candidate,
    dust_threshold,
    fee_for_weight,
    select_coins,
)
from twisted_paychan.wallet.errors import NoSeed
from twisted_paychan.wallet.follow import ChainSync, CoinBook, CoinWrite
from twisted_paychan.wallet.hd import Branch, Seed
from twisted_paychan.wallet.keys import KeyPurpose, ScriptType, Signer, WalletKey, derive_key, generate_key
from twisted_paychan.wallet.txbuild import SpendableCoin, build_funding_transaction, build_sweep_transaction
from twisted_paychan.wallet.reclaim import ReclaimImpossible, build_reclaim

# COINBASE_MATURITY lives in constants.py; it stays importable from here, as it always was.
__all__ = ["BaseWallet", "FundedState", "FundedRecord", "COINBASE_MATURITY"]


class FundedState(enum.Enum):
    #: Its coins are reserved; it may or may not have been broadcast.
    RESERVED = "reserved"
    #: The chain showed all its coins spent: broadcast (or conflicted), nothing left to hold.
    SPENT = "spent"
    #: Given back with ``release``; it must never be broadcast.
    RELEASED = "released"


@dataclass(frozen=True)
class FundedRecord:
    funded: FundedTransaction
    state: FundedState


@implementer(IServedWallet)
class BaseWallet:
    """IWallet over in-memory state; see the module docstring. Not to be used directly."""

    log = Logger()

    def __init__(self, chain: Any, network: Network) -> None:
        #: An IChain provider.
        self._chain = chain
        self.network = network
        self._keys: dict[bytes, WalletKey] = {}
        self._signers: dict[bytes, Signer] = {}
        #: Receive and payout scripts, the ones scanned for coins, in creation order.
        self._by_script: dict[bytes, WalletKey] = {}
        self._payout: Optional[WalletKey] = None
        #: The payout key handed out for each channel's settlement, by contract txid.
        self._labels: dict[bytes, WalletKey] = {}
        #: Where new keys come from; None for a wallet from before seeds (random keys).
        self._seed: Optional[Seed] = None
        #: The next unused index of each branch of the seed's tree.
        self._next: dict[Branch, int] = {b: 0 for b in Branch}
        #: Channel keys lent to handshakes and not yet stored (``provisional_channel_key``).
        self._provisional: dict[bytes, WalletKey] = {}
        #: The coins as the chain lists them (``CoinBook.view_of``), kept in step with the book.
        self._coins: dict[OutPoint, Utxo] = {}
        self._tip_height: Optional[int] = None
        self._funded: dict[bytes, FundedRecord] = {}
        #: The txids of ``_funded`` not RELEASED: their unconfirmed change is ours to spend. Kept
        #: as the records change, not rebuilt from every record on every ``fund`` (issue #21:
        #: a wallet funds one contract per channel, for months).
        self._trusted: set[bytes] = set()
        self._reserved: dict[OutPoint, bytes] = {}
        self._book = CoinBook(self.is_mine)
        self._sync = ChainSync(self, chain, self._book)

    # -- Persistence hooks: durable before they return ------------------------------------

    def _persist_key(self, key: WalletKey) -> None:
        """Store a new key."""

    def _persist_funded(self, funded: FundedTransaction) -> None:
        """Store a funded transaction in state RESERVED with its coins reserved."""

    def _persist_unreserved(
        self, outpoints: Iterable[OutPoint], states: dict[bytes, FundedState]
    ) -> None:
        """Drop these reservations and set these funded transactions' states."""

    def _persist_coin_write(self, write: CoinWrite) -> None:
        """Store what a chain event changed in the coins (``wallet.follow.CoinWrite``)."""

    def _persist_tracked(self, key: WalletKey) -> None:
        """Store that a stored channel key's payouts are now tracked (its new script type)."""

    # -- Loading (for subclasses restoring state) -----------------------------------------

    def _load_key(self, key: WalletKey) -> None:
        self._keys[key.public_key] = key
        self._signers[key.public_key] = key.signer()
        script = key.script_pubkey
        if script is not None:
            self._by_script[script] = key
        if key.purpose is KeyPurpose.PAYOUT and key.label is None and self._payout is None:
            self._payout = key
        if key.label is not None:
            self._labels[key.label] = key
        if key.path is not None:
            branch, index = self._branch_of(key.path)
            self._next[branch] = max(self._next[branch], index + 1)

    def _branch_of(self, path: str) -> tuple[Branch, int]:
        prefix, index = path.rsplit("/", 1)
        for branch in Branch:
            if branch.path(self.network, 0).rsplit("/", 1)[0] == prefix:
                return branch, int(index)
        raise ValueError(f"a key path outside this wallet's tree: {path}")

    def _load_funded(self, record: FundedRecord, reserved: Iterable[OutPoint]) -> None:
        self._set_funded(record)
        for outpoint in reserved:
            self._reserved[outpoint] = record.funded.txid

    def _make_key(
        self, purpose: KeyPurpose, script_type: Optional[ScriptType], label: Optional[bytes] = None
    ) -> WalletKey:
        """A new key, not yet stored: the next of its branch of the seed, or a random one."""
        if self._seed is None:
            key = generate_key(purpose, script_type)
            return key if label is None else WalletKey(key.secret, key.public_key, purpose, script_type, None, label)
        branch = _branch_for(purpose, script_type)
        index = self._next[branch]
        self._next[branch] = index + 1
        return self.derive(branch, index, purpose, script_type, label)

    def derive(
        self, branch: Branch, index: int, purpose: KeyPurpose, script_type: Optional[ScriptType],
        label: Optional[bytes] = None,
    ) -> WalletKey:
        """The key at ``index`` of ``branch`` of the seed, neither stored nor held (restore
        looks with it); :class:`NoSeed` for a wallet without one."""
        if self._seed is None:
            raise NoSeed("this wallet's keys are random: it has no seed")
        return derive_key(self._seed.secret(branch, index), branch.path(self.network, index),
                          purpose, script_type, label)

    def adopt_key(self, key: WalletKey) -> None:
        """Hold and store a key made by :meth:`derive` (restore found it in use)."""
        if key.public_key in self._keys:
            return
        self._persist_key(key)
        self._load_key(key)

    def _new_key(
        self, purpose: KeyPurpose, script_type: Optional[ScriptType], label: Optional[bytes] = None
    ) -> WalletKey:
        key = self._make_key(purpose, script_type, label)
        self._persist_key(key)
        self._load_key(key)
        return key

    @property
    def has_seed(self) -> bool:
        return self._seed is not None

    def mnemonic(self) -> str:
        """The BIP39 words every key of this wallet comes from; :class:`NoSeed` for a wallet
        from before seeds. A secret: show it to its owner, never log it."""
        if self._seed is None:
            raise NoSeed("this wallet's keys are random: it has no seed (back up its file instead)")
        return self._seed.mnemonic()

    def _ensure_payout_key(self) -> None:
        if self._payout is None:
            self._new_key(KeyPurpose.PAYOUT, ScriptType.P2WPKH)

    # -- Keys -----------------------------------------------------------------------------

    def new_channel_key(self) -> Deferred[ISigner]:
        """See IWallet. A client's key: its change and refund pay P2PKH of it, so the wallet
        tracks that script's coins from now on."""
        key = self._new_key(KeyPurpose.CHANNEL, ScriptType.P2PKH)
        self.log.info("new channel key {public_key}", public_key=key.public_key.hex())
        signer: ISigner = self._signers[key.public_key]
        return succeed(signer)

    def provisional_channel_key(self) -> Deferred[ISigner]:
        """See IWallet: a server lends one to each new-channel handshake, so that a handshake
        that never becomes a channel leaves nothing behind (PROTOCOL.md §13 items 10 and 28)."""
        key = self._make_key(KeyPurpose.CHANNEL, None)
        self._provisional[key.public_key] = key
        signer: ISigner = key.signer()
        return succeed(signer)

    def keep_channel_key(self, public_key: bytes) -> Optional[Deferred[None]]:
        public_key = bytes(public_key)
        key = self._provisional.get(public_key)
        if key is None:
            if public_key not in self._keys:
                raise KeyError(f"this wallet neither holds nor lent a key {public_key.hex()}")
            return None
        # Durable before the channel record that names it is written (persist, then act).
        self._persist_key(key)
        self._load_key(key)
        del self._provisional[public_key]
        self.log.info("new channel key {public_key}", public_key=public_key.hex())
        return None

    def forget_channel_key(self, public_key: bytes) -> None:
        self._provisional.pop(bytes(public_key), None)

    def provisional_count(self) -> int:
        """How many provisional keys are lent and neither kept nor forgotten."""
        return len(self._provisional)

    def track_channel_key(self, public_key: bytes) -> bool:
        """Count the coins paid to P2PKH of this channel key (a client's change and refund)
        from now on; for keys stored before the wallet tracked them. KeyError for a key it does
        not hold; whether anything changed."""
        key = self._keys.get(bytes(public_key))
        if key is None or key.purpose is not KeyPurpose.CHANNEL:
            raise KeyError(f"this wallet holds no channel key {bytes(public_key).hex()}")
        if key.script_type is not None:
            return False
        tracked = WalletKey(key.secret, key.public_key, key.purpose, ScriptType.P2PKH, key.path, key.label)
        self._persist_tracked(tracked)
        self._load_key(tracked)
        assert tracked.script_pubkey is not None
        if self._book.synced is not None:  # its coins so far are not in the book: scan for them
            self._sync.scan_later(tracked.script_pubkey)
        return True

    def signer_for(self, public_key: bytes) -> Signer:
        try:
            return self._signers[bytes(public_key)]
        except KeyError:
            raise KeyError(f"this wallet holds no key {bytes(public_key).hex()}") from None

    def new_address(self, script_type: Union[ScriptType, str] = ScriptType.P2WPKH) -> Deferred[str]:
        """A fresh receive address: P2WPKH unless ``script_type`` says ``"p2pkh"``."""
        key = self._new_key(KeyPurpose.RECEIVE, ScriptType(script_type))
        assert key.script_pubkey is not None
        return succeed(script_to_address(key.script_pubkey, self.network))

    def payout_script(self) -> Deferred[bytes]:
        self._ensure_payout_key()
        assert self._payout is not None and self._payout.script_pubkey is not None
        return succeed(self._payout.script_pubkey)

    def settlement_payout_script(self, contract_txid: bytes) -> Deferred[bytes]:
        """See IWallet: a payout script of its own for the settlement of the channel whose
        contract is ``contract_txid``, stored (with that txid) before it is returned; the same
        script again for the same channel. A wallet without a seed has only its one payout
        script."""
        contract_txid = bytes(contract_txid)
        if self._seed is None:
            return self.payout_script()
        key = self._labels.get(contract_txid)
        if key is None:
            key = self._new_key(KeyPurpose.PAYOUT, ScriptType.P2WPKH, label=contract_txid)
        assert key.script_pubkey is not None
        return succeed(key.script_pubkey)

    def payout_scripts(self) -> list[bytes]:
        """Every payout script handed out, the shared one and each settlement's."""
        return [s for s, k in self._by_script.items() if k.purpose is KeyPurpose.PAYOUT]

    def is_mine(self, script_pubkey: bytes) -> bool:
        """Whether coins paid to ``script_pubkey`` are counted by this wallet."""
        return bytes(script_pubkey) in self._by_script

    def public_keys(self, purpose: Optional[KeyPurpose] = None) -> list[bytes]:
        """The public keys held, in creation order, optionally only those for ``purpose``."""
        return [k for k, v in self._keys.items() if purpose is None or v.purpose is purpose]

    # -- Coins ----------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the chain from now on (scanning it first if this wallet never did)."""
        if not self._sync.running:
            self._sync.running = True
            self._logged_refresh()

    def stop(self) -> None:
        self._sync.running = False
        self._sync.stop()

    def close(self) -> None:
        """Stop watching the chain; a wallet with a file releases it too (SqliteWallet)."""
        self.stop()

    def _logged_refresh(self) -> None:
        def failed(f: Failure) -> None:
            if not self._sync.running:
                return  # stopped meanwhile (a shutdown closed the chain or the file): not news
            self.log.failure("following the chain failed", f)

        self.refresh().addErrback(failed)

    def refresh(self) -> Deferred[None]:
        """Take in what the chain has said since the last look (the first time: the one full
        scan); fires when the coins are the chain's."""
        return self._sync.sync()

    @property
    def synced_to(self) -> Optional[tuple[int, bytes]]:
        """The block (height, hash) the wallet's confirmed coins are as of; None before its
        first scan."""
        synced = self._book.synced
        return None if synced is None else (synced.height, synced.block_hash)

    @property
    def scans(self) -> int:
        """Full scans of the chain this wallet made since it was opened."""
        return self._sync.scans

    def scanned_scripts(self) -> list[bytes]:
        """Every script whose coins the wallet counts, for its full scan."""
        return list(self._by_script)

    def adopt_scan(self, scan: OutputScan) -> None:
        """Take a full scan (``wallet.restore`` made it) as the coins; follow on from its block."""
        self._sync.adopt(scan)

    def apply_coin_write(self, write: CoinWrite) -> None:
        """Store what a chain event changed, then bring the coins in line with the book; a
        reserved coin the chain no longer lists as unspent is no longer held."""
        if write:
            self._persist_coin_write(write)
        book = self._book
        gone = []
        for point in book.touched:
            coin = book.view_of(point)
            if coin is not None:
                self._coins[point] = coin
            elif self._coins.pop(point, None) is not None:
                gone.append(point)
        book.touched.clear()
        if book.synced is not None:
            self._tip_height = book.synced.height
        if write.replace:  # a scan is the whole picture: check every reservation
            gone = [op for op in self._reserved if op not in self._coins]
        self._drop_reservations([op for op in gone if op in self._reserved], spent=True)

    def _drop_reservations(self, outpoints: list[OutPoint], spent: bool) -> None:
        """Unreserve ``outpoints``; a funded transaction left with none becomes SPENT (when the
        chain spent them) or RELEASED."""
        if not outpoints:
            return
        dropping = set(outpoints)
        txids = {self._reserved[op] for op in dropping}
        still = {t for op, t in self._reserved.items() if op not in dropping}
        new_state = FundedState.SPENT if spent else FundedState.RELEASED
        states = {t: new_state for t in txids if t not in still}
        self._persist_unreserved(outpoints, states)
        for op in outpoints:
            del self._reserved[op]
        for txid, state in states.items():
            self._set_funded(FundedRecord(self._funded[txid].funded, state))

    def _set_funded(self, record: FundedRecord) -> None:
        txid = record.funded.txid
        self._funded[txid] = record
        if record.state is FundedState.RELEASED:
            self._trusted.discard(txid)
        else:
            self._trusted.add(txid)

    def _trusted_txids(self) -> set[bytes]:
        return self._trusted

    def _mature(self, u: Utxo) -> bool:
        if not u.coinbase:
            return True
        return (
            u.height is not None
            and self._tip_height is not None
            and self._tip_height + 1 - u.height >= COINBASE_MATURITY
        )

    def _spendable(self) -> list[Utxo]:
        trusted = self._trusted_txids()
        return [
            u
            for op, u in self._coins.items()
            if op not in self._reserved
            and self._mature(u)
            and (u.height is not None or op.txid in trusted)
        ]

    def balance(self) -> Deferred[Balance]:
        """Unreserved coins: confirmed (mature) ones, and unconfirmed ones (ours or incoming).
        Immature coinbase outputs count in neither."""

        def total(_: None) -> Balance:
            free = [u for op, u in self._coins.items() if op not in self._reserved and self._mature(u)]
            return Balance(
                confirmed=sum(u.value for u in free if u.height is not None),
                unconfirmed=sum(u.value for u in free if u.height is None),
            )

        return self.refresh().addCallback(total)

    def coins(self) -> Deferred[list[Utxo]]:
        return self.refresh().addCallback(lambda _: sorted(self._spendable(), key=_coin_order))

    # -- Funding --------------------------------------------------------------------------

    def fund(self, script_pubkey: bytes, amount: int, fee_rate: int) -> Deferred[FundedTransaction]:
        """See IWallet. ``fee_rate`` is in sat per 1000 virtual bytes and is raised to the
        relay floor (1000) if below it. Raises ValueError at once for an amount that is not
        positive, above the money supply, or dust for ``script_pubkey``."""
        script_pubkey = checked_payment(script_pubkey, amount)
        rate = max(int(fee_rate), FEE_RATE_FLOOR)
        self._ensure_payout_key()
        return self.refresh().addCallback(lambda _: self._fund_now(script_pubkey, amount, rate))

    def _fund_now(self, script_pubkey: bytes, amount: int, fee_rate: int) -> FundedTransaction:
        # Synchronous from selection to reservation: no other fund() can interleave.
        assert self._payout is not None and self._payout.script_pubkey is not None
        change_script = self._payout.script_pubkey
        candidates = [self._candidate(u) for u in self._spendable()]
        selection = select_coins(candidates, amount, script_pubkey, change_script, fee_rate)
        coins = [
            SpendableCoin(c.utxo, self._signers[self._by_script[c.utxo.script_pubkey].public_key],
                          self._script_type(c.utxo))
            for c in selection.coins
        ]
        funded = build_funding_transaction(
            coins, amount, script_pubkey, change_script if selection.change else None, fee_rate
        )
        self._persist_funded(funded)
        self._load_funded(FundedRecord(funded, FundedState.RESERVED), funded.spent)
        self.log.info(
            "funded {txid}: {amount} sat, fee {fee} sat, {inputs} input(s)",
            txid=display_hex(funded.txid), amount=amount, fee=funded.fee, inputs=len(funded.spent),
        )
        return funded

    def sweep(self, script_pubkey: bytes, fee_rate: int) -> Deferred[FundedTransaction]:
        """Like :meth:`fund`, but spending every spendable coin into one output to
        ``script_pubkey`` (minus the fee); ``InsufficientFunds`` when what is left is dust."""
        script_pubkey = bytes(script_pubkey)
        if not script_pubkey:
            raise ValueError("empty output script")
        rate = max(int(fee_rate), FEE_RATE_FLOOR)
        return self.refresh().addCallback(lambda _: self._sweep_now(script_pubkey, rate))

    def _sweep_now(self, script_pubkey: bytes, fee_rate: int) -> FundedTransaction:
        from twisted_paychan.chain.interfaces import InsufficientFunds

        # Coins worth less than the fee of spending them would only lower what arrives.
        usable = [c for c in (self._candidate(u) for u in self._spendable())
                  if c.utxo.value > fee_for_weight(c.input_weight, fee_rate)]
        coins = [
            SpendableCoin(c.utxo, self._signers[self._by_script[c.utxo.script_pubkey].public_key],
                          self._script_type(c.utxo))
            for c in sorted(usable, key=lambda c: _coin_order(c.utxo))
        ]
        total = sum(c.utxo.value for c in coins)
        try:
            funded = build_sweep_transaction(coins, script_pubkey, fee_rate) if coins else None
        except ValueError:
            funded = None
        if funded is None:
            raise InsufficientFunds(total + dust_threshold(script_pubkey), total)
        self._persist_funded(funded)
        self._load_funded(FundedRecord(funded, FundedState.RESERVED), funded.spent)
        self.log.info(
            "swept {inputs} coin(s) into {txid}: fee {fee} sat",
            txid=display_hex(funded.txid), fee=funded.fee, inputs=len(funded.spent),
        )
        return funded

    def _script_type(self, u: Utxo) -> ScriptType:
        script_type = self._by_script[u.script_pubkey].script_type
        assert script_type is not None
        return script_type

    def _candidate(self, u: Utxo) -> Candidate:
        if self._script_type(u) is ScriptType.P2WPKH:
            return Candidate(u, P2WPKH_INPUT_WEIGHT, witness=True)
        return Candidate(u, P2PKH_INPUT_WEIGHT, witness=False)

    def release(self, funded: FundedTransaction) -> None:
        """See IWallet. Releasing twice, or after the chain showed the coins spent, does
        nothing; a transaction this wallet never funded is a KeyError. Never release a
        transaction that may have been broadcast: its coins could be spent twice."""
        if funded.txid not in self._funded:
            raise KeyError(f"this wallet did not fund {display_hex(funded.txid)}")
        mine = [op for op, t in self._reserved.items() if t == funded.txid]
        self._drop_reservations(mine, spent=False)
        if mine:
            self.log.info("released {txid}", txid=display_hex(funded.txid))

    def reclaim(self, funded_txid: bytes, fee_rate: int) -> Deferred[FundedTransaction]:
        """See IWallet (``wallet/reclaim.py`` says why)."""
        self._ensure_payout_key()
        rate = max(int(fee_rate), FEE_RATE_FLOOR)
        return self.refresh().addCallback(lambda _: self._reclaim_now(bytes(funded_txid), rate))

    def _reclaim_now(self, funded_txid: bytes, fee_rate: int) -> FundedTransaction:
        record = self._funded.get(funded_txid)
        if record is None:
            raise KeyError(f"this wallet did not fund {display_hex(funded_txid)}")
        coins = [self._coins.get(op) for op in record.funded.spent]
        if any(c is None for c in coins):
            raise ReclaimImpossible(f"the inputs of {display_hex(funded_txid)} are spent already")
        assert self._payout is not None and self._payout.script_pubkey is not None
        spendable = [SpendableCoin(u, self._signers[self._by_script[u.script_pubkey].public_key], self._script_type(u))
                     for u in coins if u is not None]
        reclaim = build_reclaim(spendable, self._payout.script_pubkey, fee_rate, record.funded.fee)
        # The coins pass from the contract to the reclaim: released, then reserved again.
        self._drop_reservations([op for op, t in self._reserved.items() if t == funded_txid], spent=False)
        self._persist_funded(reclaim)
        self._load_funded(FundedRecord(reclaim, FundedState.RESERVED), reclaim.spent)
        self.log.info("reclaim {txid} spends the inputs of {contract} back to this wallet ({fee} sat fee)",
                      txid=display_hex(reclaim.txid), contract=display_hex(funded_txid), fee=reclaim.fee)
        return reclaim

    def reserved_transactions(self) -> list[FundedTransaction]:
        """Funded transactions still holding coins: after a restart, each is either broadcast
        (again; broadcasting is idempotent) or released."""
        held = set(self._reserved.values())
        return [r.funded for t, r in self._funded.items() if t in held]


def checked_payment(script_pubkey: bytes, amount: int) -> bytes:
    """The checks of ``fund``'s arguments that need no coin (every backend's ``fund`` makes
    them before anything else): ``script_pubkey`` as bytes, or ValueError for an empty script,
    an amount that is not positive or above the money supply, or dust for that script."""
    script_pubkey = bytes(script_pubkey)
    if not script_pubkey:
        raise ValueError("empty output script")
    if not 0 < amount <= MAX_MONEY:
        raise ValueError(f"amount out of range: {amount}")
    if amount < dust_threshold(script_pubkey):
        raise ValueError(f"{amount} sat is dust for script {script_pubkey.hex()}")
    return script_pubkey


def _coin_order(u: Utxo) -> tuple[int, OutPoint]:
    return (-u.value, u.outpoint)


def _branch_for(purpose: KeyPurpose, script_type: Optional[ScriptType]) -> Branch:
    if purpose is KeyPurpose.CHANNEL:
        return Branch.CHANNEL
    if purpose is KeyPurpose.PAYOUT:
        return Branch.PAYOUT
    return Branch.RECEIVE if script_type is ScriptType.P2WPKH else Branch.RECEIVE_LEGACY
