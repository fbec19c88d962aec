"""Coin selection and funding transactions, without a wallet or a chain."""

from __future__ import annotations

import hashlib

import coincurve
import pytest
from bitcoin.core import CTransaction
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twisted_paychan.bitcoin.addresses import hash160, p2pkh_script, p2sh_script, p2wpkh_script
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.chain.interfaces import InsufficientFunds
from twisted_paychan.chain.types import OutPoint, Utxo
from twisted_paychan.constants import P2PKH_DUST_LIMIT, P2SH_DUST_LIMIT
from twisted_paychan.wallet.coinselect import (
    P2PKH_INPUT_WEIGHT,
    P2WPKH_INPUT_WEIGHT,
    Candidate,
    dust_threshold,
    fee_for_weight,
    output_weight,
    select_coins,
    transaction_weight,
)
from twisted_paychan.wallet.keys import ScriptType, Signer
from twisted_paychan.wallet.txbuild import FUNDING_TX_VERSION, SpendableCoin, build_funding_transaction

TARGET = p2sh_script(hash160(b"contract"))
CHANGE = p2wpkh_script(hash160(b"change"))


def _utxo(n: int, value: int, script: bytes = CHANGE) -> Utxo:
    return Utxo(OutPoint(hashlib.sha256(b"%d" % n).digest(), n % 3), value, script, 100)


def _wpkh(n: int, value: int) -> Candidate:
    return Candidate(_utxo(n, value), P2WPKH_INPUT_WEIGHT, witness=True)


def test_dust_thresholds_match_bitcoin_core():
    assert dust_threshold(p2pkh_script(b"\0" * 20)) == P2PKH_DUST_LIMIT == 546
    assert dust_threshold(p2sh_script(b"\0" * 20)) == P2SH_DUST_LIMIT == 540
    assert dust_threshold(p2wpkh_script(b"\0" * 20)) == 294


def test_fee_rounds_up_on_virtual_size():
    assert fee_for_weight(4, 1000) == 1
    assert fee_for_weight(5, 1000) == 2  # 1.25 vbytes -> 2
    assert fee_for_weight(400, 1500) == 150
    assert fee_for_weight(404, 1001) == 102  # 101.101 sat -> 102


def test_weight_counts_segwit_marker_and_empty_witnesses():
    legacy = Candidate(_utxo(1, 1000), P2PKH_INPUT_WEIGHT, witness=False)
    only_legacy = transaction_weight([legacy], [TARGET])
    assert only_legacy == (10 + 148) * 4 + output_weight(TARGET)
    mixed = transaction_weight([legacy, _wpkh(2, 1000)], [TARGET])
    assert mixed == only_legacy + P2WPKH_INPUT_WEIGHT + 2 + 1


def test_largest_first_with_change():
    coins = [_wpkh(1, 10_000), _wpkh(2, 80_000), _wpkh(3, 50_000)]
    sel = select_coins(coins, 60_000, TARGET, CHANGE, 1000)
    assert [c.utxo.value for c in sel.coins] == [80_000] and sel.change


def test_accumulates_largest_first():
    coins = [_wpkh(1, 30_000), _wpkh(2, 40_000), _wpkh(3, 20_000)]
    sel = select_coins(coins, 65_000, TARGET, CHANGE, 1000)
    assert [c.utxo.value for c in sel.coins] == [40_000, 30_000] and sel.change


def test_changeless_match_is_preferred():
    fee_one_input = fee_for_weight(transaction_weight([_wpkh(0, 0)], [TARGET]), 1000)
    coins = [_wpkh(1, 90_000), _wpkh(2, 30_000), _wpkh(3, 25_000)]
    sel = select_coins(coins, 25_000 - fee_one_input - 10, TARGET, CHANGE, 1000)
    assert [c.utxo.value for c in sel.coins] == [25_000] and not sel.change


def test_changeless_pair():
    fee_two = fee_for_weight(transaction_weight([_wpkh(0, 0), _wpkh(0, 0)], [TARGET]), 2000)
    coins = [_wpkh(1, 70_000), _wpkh(2, 41_000), _wpkh(3, 33_000), _wpkh(4, 9_000)]
    sel = select_coins(coins, 41_000 + 9_000 - fee_two, TARGET, CHANGE, 2000)
    assert sorted(c.utxo.value for c in sel.coins) == [9_000, 41_000] and not sel.change


def test_uneconomical_coins_are_ignored():
    # At 100 sat/vB an input costs 6800 sat: a 5000 sat coin is worth less than nothing.
    coins = [_wpkh(1, 5_000), _wpkh(2, 5_000), _wpkh(3, 5_000)]
    with pytest.raises(InsufficientFunds) as e:
        select_coins(coins, 1_000, TARGET, CHANGE, 100_000)
    assert e.value.available == 15_000


def test_insufficient_funds_reports_needed_and_available():
    coins = [_wpkh(1, 10_000), _wpkh(2, 10_000)]
    with pytest.raises(InsufficientFunds) as e:
        select_coins(coins, 20_000, TARGET, CHANGE, 1000)
    fee = fee_for_weight(transaction_weight(coins, [TARGET]), 1000)
    assert (e.value.needed, e.value.available) == (20_000 + fee, 20_000)


@given(st.lists(st.integers(1_000, 2_000_000), min_size=1, max_size=12), st.integers(1_000, 1_500_000),
       st.randoms(use_true_random=False))
def test_selection_ignores_candidate_order(values, amount, rnd):
    coins = [_wpkh(i, v) for i, v in enumerate(values)]
    shuffled = list(coins)
    rnd.shuffle(shuffled)
    try:
        a = select_coins(coins, amount, TARGET, CHANGE, 1000)
    except InsufficientFunds:
        with pytest.raises(InsufficientFunds):
            select_coins(shuffled, amount, TARGET, CHANGE, 1000)
        return
    assert select_coins(shuffled, amount, TARGET, CHANGE, 1000) == a


# -- signed transactions -----------------------------------------------------------------------

_KEYS = [coincurve.PrivateKey(hashlib.sha256(b"key %d" % i).digest()) for i in range(4)]


def _spendable(n: int, value: int, script_type: ScriptType) -> SpendableCoin:
    signer = Signer(_KEYS[n % len(_KEYS)].secret)
    script = script_type.script_for(signer.public_key)
    return SpendableCoin(_utxo(n, value, script), signer, script_type)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(2_000, 3_000_000), st.sampled_from(list(ScriptType))), min_size=1, max_size=6),
    st.integers(600, 2_000_000),
    st.sampled_from([1000, 1001, 3333, 25_000, 150_000]),
)
# Cases where a re-signed transaction shrank by two bytes and the fee once overshot its size.
@example(coins=[(7162, ScriptType.P2PKH)], amount=601, rate=1000)
@example(coins=[(2000, ScriptType.P2WPKH), (2000, ScriptType.P2WPKH), (29761, ScriptType.P2PKH)], amount=776, rate=1000)
def test_selected_and_signed_transactions_are_valid(coins, amount, rate):
    spendable = [_spendable(i, v, t) for i, (v, t) in enumerate(coins)]
    by_outpoint = {c.utxo.outpoint: c for c in spendable}
    candidates = [
        Candidate(c.utxo, P2WPKH_INPUT_WEIGHT if c.script_type is ScriptType.P2WPKH else P2PKH_INPUT_WEIGHT,
                  c.script_type is ScriptType.P2WPKH)
        for c in spendable
    ]
    try:
        sel = select_coins(candidates, amount, TARGET, CHANGE, rate)
    except InsufficientFunds as e:
        assert e.needed > sum(c.utxo.value for c in candidates if c.utxo.value > fee_for_weight(c.input_weight, rate))
        return
    chosen = [by_outpoint[c.utxo.outpoint] for c in sel.coins]
    funded = build_funding_transaction(chosen, amount, TARGET, CHANGE if sel.change else None, rate)
    tx = CTransaction.deserialize(funded.tx)
    assert tx.nVersion == FUNDING_TX_VERSION and tx.nLockTime == 0
    assert tx.vout[0].nValue == amount and bytes(tx.vout[0].scriptPubKey) == TARGET
    total_in = sum(c.utxo.value for c in chosen)
    assert total_in == sum(o.nValue for o in tx.vout) + funded.fee
    needed = fee_for_weight(tx.calc_weight(), rate)
    assert funded.fee >= needed
    assert sel.fee_estimate >= needed  # the selection's size is an upper bound
    if funded.change_index is not None:
        assert tx.vout[1].nValue >= dust_threshold(CHANGE)
        # Each re-signing can change a signature's length by a byte or two (DER drops leading
        # zeros), so a fee that covered one signed size may face a smaller one; the builder
        # keeps the cheapest signed candidate, never paying more than 3 vbytes per input over.
        assert funded.fee <= needed + fee_for_weight(4 * 3 * len(tx.vin), rate)
    else:
        assert funded.fee - needed < fee_for_weight(output_weight(CHANGE), rate) + dust_threshold(CHANGE) + 2
    for index, coin in enumerate(chosen):
        assert verify_input(funded.tx, index, coin.utxo.script_pubkey, coin.utxo.value)


def test_change_below_dust_after_signing_is_dropped():
    coin = _spendable(1, 10_000, ScriptType.P2WPKH)
    # Leave a change of about 290 sat, just below the P2WPKH dust limit of 294.
    with_change = build_funding_transaction([coin], 5_000, TARGET, CHANGE, 1000)
    change = CTransaction.deserialize(with_change.tx).vout[1].nValue
    amount = 5_000 + change - 290
    funded = build_funding_transaction([coin], amount, TARGET, CHANGE, 1000)
    assert funded.change_index is None
    assert funded.fee == 10_000 - amount


def test_not_enough_for_the_signed_size_is_an_error():
    coin = _spendable(1, 10_000, ScriptType.P2PKH)
    with pytest.raises(ValueError, match="signed size needs"):
        build_funding_transaction([coin], 9_990, TARGET, None, 1000)
