"""
The IWallet conformance suite, run against every wallet implementation on a MemoryChain.

A test module subclasses :class:`WalletConformance` and provides a ``harness`` fixture (a
:class:`Harness` with a fresh wallet on a fresh chain). Every transaction the wallet signs is
checked input by input with the judge (Bitcoin Core's interpreter), with the spent amount, and
broadcast to the MemoryChain, which applies the mempool rules (fees, dust, conflicts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import coincurve
import pytest
from bitcoin.core import CTransaction
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script, hash160, p2pkh_script, p2sh_script
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.chain.interfaces import InsufficientFunds, ISigner, IWallet
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.chain.types import FundedTransaction, OutPoint, Utxo
from twisted_paychan.wallet.coinselect import fee_for_weight

#: Where funded transactions pay: a P2SH script standing in for a channel contract.
TARGET = p2sh_script(hash160(b"a channel's redeem script"))


#: In-memory connections a backend talks over (the signer: backend's, to a signer in the test
#: process over twisted.test.iosim), pumped before a Deferred is judged; empty for the others.
PUMPS: list[Callable[[], object]] = []


def _pump() -> None:
    for pump in PUMPS:
        pump()


def result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired (the MemoryChain is synchronous),
    once the in-memory connections in :data:`PUMPS` are pumped."""
    _pump()
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure_of(d: Deferred[Any]) -> Failure:
    _pump()
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and isinstance(out[0], Failure), f"expected a failure, got {out}"
    return out[0]


@dataclass
class Harness:
    clock: Clock
    chain: MemoryChain
    wallet: Any
    #: Make another wallet on the same chain (for a second party).
    other_wallet: Callable[[], Any]


class WalletConformance:
    """Subclass and provide a ``harness`` fixture."""

    # -- helpers ----------------------------------------------------------------------------

    def credit(self, h: Harness, value: int, script_type: str = "p2wpkh") -> Utxo:
        address = result(h.wallet.new_address(script_type))
        script = address_to_script(address, REGTEST)
        outpoint = h.chain.credit(script, value)
        return Utxo(outpoint, value, script, None)

    def check_signed(self, h: Harness, funded: FundedTransaction, spent: dict[OutPoint, Utxo]) -> CTransaction:
        tx = CTransaction.deserialize(funded.tx)
        assert bytes(tx.GetTxid()) == funded.txid
        assert tuple(OutPoint(bytes(i.prevout.hash), i.prevout.n) for i in tx.vin) == funded.spent
        for index, txin in enumerate(tx.vin):
            coin = spent[OutPoint(bytes(txin.prevout.hash), txin.prevout.n)]
            assert verify_input(funded.tx, index, coin.script_pubkey, coin.value), f"input {index}"
        return tx

    # -- keys -------------------------------------------------------------------------------

    def test_provides_iwallet(self, harness: Harness) -> None:
        assert IWallet.providedBy(harness.wallet)

    def test_new_channel_key_signs(self, harness: Harness) -> None:
        signer = result(harness.wallet.new_channel_key())
        assert ISigner.providedBy(signer)
        assert len(signer.public_key) == 33 and signer.public_key[0] in (2, 3)
        digest = bytes(range(32))
        sig = signer.sign(digest)
        assert coincurve.PublicKey(signer.public_key).verify(sig, digest, hasher=None)
        again = harness.wallet.signer_for(signer.public_key)
        assert again.sign(digest) == sig  # RFC 6979: deterministic, same key
        other = result(harness.wallet.new_channel_key())
        assert other.public_key != signer.public_key

    def test_provisional_channel_key_is_kept_or_forgotten(self, harness: Harness) -> None:
        """Issue #14 item 2: a server's handshake borrows a key that is stored only when a
        channel names it; one forgotten leaves the wallet as it was."""
        w = harness.wallet
        held = list(w.public_keys())
        lent = result(w.provisional_channel_key())
        digest = bytes(range(32))
        assert coincurve.PublicKey(lent.public_key).verify(lent.sign(digest), digest, hasher=None)
        assert w.public_keys() == held
        with pytest.raises(KeyError):
            w.signer_for(lent.public_key)  # not the wallet's until kept
        w.forget_channel_key(lent.public_key)
        assert w.public_keys() == held and w.provisional_count() == 0
        with pytest.raises(KeyError):
            w.keep_channel_key(lent.public_key)  # forgotten: gone for good

        kept = result(w.provisional_channel_key())
        w.keep_channel_key(kept.public_key)
        w.keep_channel_key(kept.public_key)  # keeping twice is harmless
        w.forget_channel_key(kept.public_key)  # a kept key is never dropped
        assert w.public_keys() == held + [kept.public_key]
        assert w.signer_for(kept.public_key).sign(digest) == kept.sign(digest)
        assert w.provisional_count() == 0

    def test_signer_for_unknown_key(self, harness: Harness) -> None:
        stranger = coincurve.PrivateKey().public_key.format()
        with pytest.raises(KeyError):
            harness.wallet.signer_for(stranger)

    def test_signer_refuses_non_digest(self, harness: Harness) -> None:
        signer = result(harness.wallet.new_channel_key())
        with pytest.raises(ValueError):
            signer.sign(b"not 32 bytes")

    def test_new_addresses(self, harness: Harness) -> None:
        w = harness.wallet
        a, b = result(w.new_address()), result(w.new_address())
        legacy = result(w.new_address("p2pkh"))
        assert a != b
        assert a.startswith("bcrt1q") and len(address_to_script(a, REGTEST)) == 22
        assert address_to_script(legacy, REGTEST)[:3] == bytes.fromhex("76a914")

    def test_payout_script_is_stable_and_ours(self, harness: Harness) -> None:
        w = harness.wallet
        script = result(w.payout_script())
        assert result(w.payout_script()) == script
        harness.chain.credit(script, 40_000)
        assert result(w.balance()).confirmed == 40_000

    # -- coins ------------------------------------------------------------------------------

    def test_empty_wallet(self, harness: Harness) -> None:
        balance = result(harness.wallet.balance())
        assert (balance.confirmed, balance.unconfirmed) == (0, 0)
        assert result(harness.wallet.coins()) == []

    def test_balance_after_credit_and_mine(self, harness: Harness) -> None:
        self.credit(harness, 100_000)
        self.credit(harness, 50_000, "p2pkh")
        harness.chain.mine()
        harness.clock.advance(0)
        balance = result(harness.wallet.balance())
        assert (balance.confirmed, balance.unconfirmed) == (150_000, 0)
        assert sorted(u.value for u in result(harness.wallet.coins())) == [50_000, 100_000]

    def test_others_coins_are_not_counted(self, harness: Harness) -> None:
        harness.chain.credit(TARGET, 70_000)
        assert result(harness.wallet.balance()).total == 0

    def test_start_follows_new_blocks(self, harness: Harness) -> None:
        """Started, the wallet follows each new block by itself (issue #21: the one full scan
        when it starts, none per block, no per-script query); stopped, it does not."""
        scans: list[list[bytes]] = []
        per_script: list[bytes] = []
        real_scan, real_unspent = harness.chain.scan_outputs, harness.chain.unspent_outputs

        def scan(scripts: Any) -> Any:
            scans.append(list(scripts))
            return real_scan(scripts)

        def unspent(script: bytes) -> Any:
            per_script.append(script)
            return real_unspent(script)

        harness.chain.scan_outputs = scan  # type: ignore[method-assign]
        harness.chain.unspent_outputs = unspent  # type: ignore[method-assign]
        harness.wallet.start()
        harness.clock.advance(0)
        _pump()
        started = harness.wallet.synced_to
        # One full scan in the wallet's life: at this start, or already while it was opened
        # (the signer: backend scans once its keys have arrived from the signer).
        assert started is not None and harness.wallet.scans == 1 and len(scans) <= 1
        harness.chain.mine()
        harness.clock.advance(0)
        _pump()
        assert harness.wallet.synced_to[0] == started[0] + 1
        assert harness.wallet.scans == 1 and len(scans) <= 1 and per_script == []
        harness.wallet.stop()
        stopped = harness.wallet.synced_to
        harness.chain.mine()
        harness.clock.advance(0)
        assert harness.wallet.synced_to == stopped

    # -- funding ----------------------------------------------------------------------------

    def test_fund_layout(self, harness: Harness) -> None:
        coin = self.credit(harness, 1_000_000)
        funded = result(harness.wallet.fund(TARGET, 300_000, 2000))
        tx = self.check_signed(harness, funded, {coin.outpoint: coin})
        assert tx.vout[0].nValue == 300_000 and bytes(tx.vout[0].scriptPubKey) == TARGET
        assert funded.change_index == 1 and len(tx.vout) == 2
        assert bytes(tx.vout[1].scriptPubKey) == result(harness.wallet.payout_script())
        assert tx.nLockTime == 0 and tx.nVersion == 2
        assert funded.fee == 1_000_000 - 300_000 - tx.vout[1].nValue
        assert funded.spent == (coin.outpoint,)

    @pytest.mark.parametrize("rate", [1000, 2500, 20_000, 100_000])
    def test_fee_matches_signed_size(self, harness: Harness, rate: int) -> None:
        coins = [self.credit(harness, 200_000), self.credit(harness, 150_000, "p2pkh")]
        funded = result(harness.wallet.fund(TARGET, 300_000, rate))
        tx = self.check_signed(harness, funded, {c.outpoint: c for c in coins})
        needed = fee_for_weight(tx.calc_weight(), rate)
        # Re-signing can shrink a signature by a byte per input after the fee was fixed.
        assert needed <= funded.fee <= needed + fee_for_weight(4 * len(tx.vin), rate)

    def test_fee_rate_below_floor_is_raised(self, harness: Harness) -> None:
        self.credit(harness, 100_000)
        funded = result(harness.wallet.fund(TARGET, 50_000, 0))
        tx = CTransaction.deserialize(funded.tx)
        assert funded.fee >= fee_for_weight(tx.calc_weight(), 1000)
        result(harness.chain.broadcast(funded.tx))

    def test_every_input_verified_by_the_judge(self, harness: Harness) -> None:
        coins = {}
        for value, kind in [(30_000, "p2wpkh"), (30_000, "p2pkh"), (30_000, "p2wpkh"), (30_000, "p2pkh")]:
            c = self.credit(harness, value, kind)
            coins[c.outpoint] = c
        funded = result(harness.wallet.fund(TARGET, 110_000, 5000))
        assert len(funded.spent) == 4
        self.check_signed(harness, funded, coins)
        # The P2WPKH signatures commit to the amount: a wrong amount must fail.
        tx = CTransaction.deserialize(funded.tx)
        for index, txin in enumerate(tx.vin):
            coin = coins[OutPoint(bytes(txin.prevout.hash), txin.prevout.n)]
            if coin.script_pubkey[0] == 0:
                assert not verify_input(funded.tx, index, coin.script_pubkey, coin.value + 1)

    def test_change_that_would_be_dust_goes_to_fee(self, harness: Harness) -> None:
        # 1 P2WPKH input, 1 P2SH output at 1000 sat/kB: 111 vbytes, fee 111; change would be 100.
        coin = self.credit(harness, 50_000 + 111 + 100)
        funded = result(harness.wallet.fund(TARGET, 50_000, 1000))
        tx = self.check_signed(harness, funded, {coin.outpoint: coin})
        assert funded.change_index is None and len(tx.vout) == 1
        assert funded.fee == 211
        result(harness.chain.broadcast(funded.tx))

    def test_inputs_are_reserved(self, harness: Harness) -> None:
        coins = {}
        for _ in range(2):
            c = self.credit(harness, 100_000)
            coins[c.outpoint] = c
        d1 = harness.wallet.fund(TARGET, 60_000, 1000)
        d2 = harness.wallet.fund(TARGET, 60_000, 1000)
        f1, f2 = result(d1), result(d2)
        assert not set(f1.spent) & set(f2.spent)
        failure = failure_of(harness.wallet.fund(TARGET, 60_000, 1000))
        assert failure.check(InsufficientFunds)
        assert result(harness.wallet.balance()).total == 0
        for f in (f1, f2):
            self.check_signed(harness, f, coins)
            result(harness.chain.broadcast(f.tx))

    def test_release_gives_coins_back(self, harness: Harness) -> None:
        self.credit(harness, 100_000)
        funded = result(harness.wallet.fund(TARGET, 60_000, 1000))
        assert result(harness.wallet.coins()) == []
        assert harness.wallet.reserved_transactions() == [funded]
        harness.wallet.release(funded)
        harness.wallet.release(funded)  # twice is harmless
        assert harness.wallet.reserved_transactions() == []
        assert result(harness.wallet.balance()).confirmed == 100_000
        again = result(harness.wallet.fund(TARGET, 60_000, 1000))
        assert again.spent == funded.spent

    def test_release_of_a_stranger_is_an_error(self, harness: Harness) -> None:
        stranger = FundedTransaction(b"", b"\x11" * 32, 0, None, ())
        with pytest.raises(KeyError):
            harness.wallet.release(stranger)

    def test_insufficient_funds(self, harness: Harness) -> None:
        self.credit(harness, 30_000)
        self.credit(harness, 20_000, "p2pkh")
        failure = failure_of(harness.wallet.fund(TARGET, 50_000, 1000))
        e = failure.check(InsufficientFunds) and failure.value
        assert isinstance(e, InsufficientFunds)
        assert e.available == 50_000
        assert e.needed > 50_000  # the amount plus the fee of spending both coins
        # Nothing was reserved by the failed attempt.
        assert result(harness.wallet.balance()).confirmed == 50_000

    def test_insufficient_funds_in_an_empty_wallet(self, harness: Harness) -> None:
        failure = failure_of(harness.wallet.fund(TARGET, 10_000, 1000))
        assert failure.check(InsufficientFunds)
        assert failure.value.available == 0 and failure.value.needed > 10_000

    @pytest.mark.parametrize("amount", [0, -1, 539, 21_000_000 * 10**8 + 1])
    def test_bad_amounts_are_refused_at_once(self, harness: Harness, amount: int) -> None:
        with pytest.raises(ValueError):
            harness.wallet.fund(TARGET, amount, 1000)

    def test_broadcast_and_mine(self, harness: Harness) -> None:
        a = self.credit(harness, 100_000)
        b = self.credit(harness, 80_000, "p2pkh")
        funded = result(harness.wallet.fund(TARGET, 120_000, 3000))
        assert result(harness.chain.broadcast(funded.tx)) == funded.txid
        change = CTransaction.deserialize(funded.tx).vout[1].nValue
        balance = result(harness.wallet.balance())
        assert (balance.confirmed, balance.unconfirmed) == (0, change)
        assert harness.wallet.reserved_transactions() == []  # the chain shows the coins spent
        harness.chain.mine()
        harness.clock.advance(0)
        balance = result(harness.wallet.balance())
        assert (balance.confirmed, balance.unconfirmed) == (a.value + b.value - 120_000 - funded.fee, 0)

    def test_own_unconfirmed_change_is_spendable(self, harness: Harness) -> None:
        self.credit(harness, 100_000)
        first = result(harness.wallet.fund(TARGET, 30_000, 1000))
        result(harness.chain.broadcast(first.tx))
        second = result(harness.wallet.fund(TARGET, 30_000, 1000))
        assert second.spent == (OutPoint(first.txid, 1),)
        result(harness.chain.broadcast(second.tx))

    def test_incoming_unconfirmed_coins_are_not_spent(self, harness: Harness) -> None:
        payer = harness.other_wallet()
        harness.chain.credit(result(payer.payout_script()), 100_000)
        ours = address_to_script(result(harness.wallet.new_address()), REGTEST)
        payment = result(payer.fund(ours, 40_000, 1000))
        result(harness.chain.broadcast(payment.tx))
        balance = result(harness.wallet.balance())
        assert (balance.confirmed, balance.unconfirmed) == (0, 40_000)
        assert result(harness.wallet.coins()) == []
        assert failure_of(harness.wallet.fund(TARGET, 10_000, 1000)).check(InsufficientFunds)
        harness.chain.mine()
        funded = result(harness.wallet.fund(TARGET, 10_000, 1000))
        assert funded.spent == (OutPoint(payment.txid, 0),)

    def test_coinbase_must_mature(self, harness: Harness) -> None:
        """A coinbase coin (as the chain reports it, in a block the wallet follows) is spendable
        only after 100 confirmations; until then it counts in neither balance."""
        script = address_to_script(result(harness.wallet.new_address()), REGTEST)
        assert result(harness.wallet.balance()).total == 0  # the wallet has scanned and follows
        harness.chain.credit(script, 5_000_000_000, coinbase=True)  # 1 confirmation
        assert result(harness.wallet.balance()).total == 0
        harness.chain.mine(98)  # 99 confirmations: a spend could not be mined
        assert result(harness.wallet.balance()).total == 0
        harness.chain.mine(1)
        assert result(harness.wallet.balance()).confirmed == 5_000_000_000

    def test_fund_is_deterministic_in_coin_choice(self, harness: Harness) -> None:
        small = self.credit(harness, 20_000)
        big = self.credit(harness, 500_000)
        self.credit(harness, 100_000)
        funded = result(harness.wallet.fund(TARGET, 15_000, 1000))
        # Largest first when no changeless set exists.
        assert funded.spent == (big.outpoint,)
        harness.wallet.release(funded)
        # An exact match (within the cost of a change output) is preferred and makes no change.
        # 111: the fee of one P2WPKH input and one P2SH output; 50 sat more is not worth change.
        exact_amount = small.value - 111 - 50
        funded = result(harness.wallet.fund(TARGET, exact_amount, 1000))
        assert funded.spent == (small.outpoint,) and funded.change_index is None

    def test_second_party_wallet_is_independent(self, harness: Harness) -> None:
        other: Optional[Any] = harness.other_wallet()
        assert other is not harness.wallet
        assert result(other.payout_script()) != result(harness.wallet.payout_script())

    # -- channel payouts, settlement payouts, sweeping (issue 10, issue 21) -------------------

    def test_client_channel_key_payouts_are_coins(self, harness: Harness) -> None:
        """A client's change and refund pay P2PKH of its channel key: the wallet counts that
        coin and spends it (signing with the channel key), checked by the judge."""
        signer = result(harness.wallet.new_channel_key())
        change_script = p2pkh_script(hash160(signer.public_key))
        assert harness.wallet.is_mine(change_script)
        outpoint = harness.chain.credit(change_script, 889_000)
        harness.chain.mine()
        assert result(harness.wallet.balance()).confirmed == 889_000
        assert [c.outpoint for c in result(harness.wallet.coins())] == [outpoint]
        funded = result(harness.wallet.fund(TARGET, 300_000, 1000))
        self.check_signed(harness, funded, {outpoint: Utxo(outpoint, 889_000, change_script, 1)})
        result(harness.chain.broadcast(funded.tx))

    def test_server_channel_keys_are_not_scanned(self, harness: Harness) -> None:
        """A server's channel keys never receive an output: scanning them would cost a query
        per channel per block for nothing."""
        signer = result(harness.wallet.provisional_channel_key())
        harness.wallet.keep_channel_key(signer.public_key)
        assert not harness.wallet.is_mine(p2pkh_script(hash160(signer.public_key)))

    def test_track_channel_key(self, harness: Harness) -> None:
        signer = result(harness.wallet.provisional_channel_key())
        harness.wallet.keep_channel_key(signer.public_key)
        assert harness.wallet.track_channel_key(signer.public_key) is True
        assert harness.wallet.track_channel_key(signer.public_key) is False
        assert harness.wallet.is_mine(p2pkh_script(hash160(signer.public_key)))
        with pytest.raises(KeyError):
            harness.wallet.track_channel_key(bytes(33))

    def test_settlement_payout_script_per_channel(self, harness: Harness) -> None:
        w = harness.wallet
        first = result(w.settlement_payout_script(b"\x01" * 32))
        second = result(w.settlement_payout_script(b"\x02" * 32))
        if not w.has_seed:  # a wallet from before seeds has its one payout script
            assert first == second == result(w.payout_script())
            return
        assert first != second and first != result(w.payout_script())
        assert result(w.settlement_payout_script(b"\x01" * 32)) == first  # a rebuild pays it again
        harness.chain.credit(first, 10_000)
        harness.chain.credit(second, 20_000)
        harness.chain.mine()
        assert result(w.balance()).confirmed == 30_000  # one balance over every payout script

    def test_sweep_spends_everything(self, harness: Harness) -> None:
        a = self.credit(harness, 100_000)
        b = self.credit(harness, 50_000, "p2pkh")
        harness.chain.mine()
        funded = result(harness.wallet.sweep(TARGET, 2000))
        tx = self.check_signed(harness, funded, {a.outpoint: a, b.outpoint: b})
        assert len(tx.vout) == 1 and tx.vout[0].nValue == 150_000 - funded.fee
        needed = fee_for_weight(tx.calc_weight(), 2000)
        # Re-signing can shrink a signature by a byte per input after the fee was fixed.
        assert needed <= funded.fee <= needed + fee_for_weight(4 * len(tx.vin), 2000)
        result(harness.chain.broadcast(funded.tx))
        harness.chain.mine()
        assert result(harness.wallet.balance()).total == 0

    def test_sweep_of_an_empty_wallet(self, harness: Harness) -> None:
        f = failure_of(harness.wallet.sweep(TARGET, 1000))
        assert f.check(InsufficientFunds) and f.value.available == 0
