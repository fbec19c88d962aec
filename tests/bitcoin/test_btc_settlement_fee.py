"""The settlement fee: our rule (real final size) and bitcoinj's estimate (spec §8.2 step 4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcoin_primitives_helpers import CHANNEL_VALUE, CLIENT, PAYOUT_SCRIPT, SERVER, channel, signer
from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin.payment import sign_payment
from twisted_paychan.bitcoin.scripts import p2pkh_script, p2sh_script
from twisted_paychan.bitcoin.settlement import (
    SettlementUnaffordable,
    bitcoinj_settlement_fee_estimate,
    build_settlement,
    dust_threshold,
    fee_for_size,
)
from twisted_paychan.bitcoin.sighash import signature_hash
from twisted_paychan.bitcoin.signatures import sign
from twisted_paychan.bitcoin.transactions import compact_size, make_transaction, tx_input, tx_output

TXID = b"\x77" * 32


def _settle(version: int, c: int, rate: int, value: int = CHANNEL_VALUE, payout_script: bytes = PAYOUT_SCRIPT):
    ch = channel(version)
    sig_c = sign_payment(CLIENT, ch, TXID, c)
    return ch, sig_c, build_settlement(ch, TXID, value, c, sig_c, SERVER, payout_script, rate)


def test_dust_thresholds() -> None:
    assert dust_threshold(PAYOUT_SCRIPT) == 546
    assert dust_threshold(p2sh_script(b"\x51")) == 540
    assert dust_threshold(bytes.fromhex("0014") + b"\x00" * 20) == 294  # P2WPKH
    assert dust_threshold(bytes.fromhex("0020") + b"\x00" * 32) == 330  # P2WSH
    assert dust_threshold(bytes.fromhex("5120") + b"\x00" * 32) == 330  # P2TR
    assert dust_threshold(bytes.fromhex("6a04deadbeef")) == 0  # OP_RETURN


def test_fee_for_size_floors_the_rate() -> None:
    assert fee_for_size(0, 265) == 265
    assert fee_for_size(999, 265) == 265
    assert fee_for_size(1500, 265) == 397  # floor(397.5)
    assert fee_for_size(100_000, 346) == 34_600


@settings(max_examples=40, deadline=None)
@given(
    version=st.sampled_from([1, 2]),
    c=st.one_of(st.just(0), st.integers(min_value=546, max_value=900_000)),
    rate=st.integers(min_value=0, max_value=250_000),
)
def test_fee_pays_exactly_for_the_real_size(version: int, c: int, rate: int) -> None:
    """fee = floor(max(rate, 1000) * real size / 1000), the payout is b - fee, and b = V - c.

    When no signature length is self-consistent the fee is priced one signature byte above the
    real size (two in the rare 70-byte case), never below it."""
    _, _, result = _settle(version, c, rate)
    assert result.fee in (fee_for_size(rate, result.size + extra) for extra in (0, 1, 2))
    assert result.payout_value == CHANNEL_VALUE - c - result.fee
    assert sum(o.nValue for o in result.tx.vout) + result.fee == CHANNEL_VALUE


def test_fee_is_exact_whenever_a_consistent_signature_length_exists() -> None:
    """Brute force over many payouts: whenever our fee is above the real size's fee, pricing
    for the real size would have produced a longer signature (so that choice underpays)."""
    ch = channel(1)
    exact = 0
    for c in range(600_000, 600_000 + 40 * 997, 997):
        sig_c = sign_payment(CLIENT, ch, TXID, c)
        result = build_settlement(ch, TXID, CHANNEL_VALUE, c, sig_c, SERVER, PAYOUT_SCRIPT, 1000)
        if result.fee == fee_for_size(1000, result.size):
            exact += 1
            continue
        assert result.fee == fee_for_size(1000, result.size + 1)
        # Price for the real size instead: the signature over that payout comes out longer.
        cheaper = result.fee - 1
        outputs = list(result.tx.vout)
        payout = tx_output(CHANNEL_VALUE - c - cheaper, PAYOUT_SCRIPT)
        unsigned = make_transaction([tx_input(TXID, 0, 0xFFFFFFFF)], outputs[:-1] + [payout])
        server_sig = sign(SERVER, signature_hash(unsigned, 0, ch.script_code, 0x01), 0x01)
        script_sig = bytes(result.tx.vin[0].scriptSig)
        assert len(server_sig) > script_sig[2 + script_sig[1]]  # the server signature's length
    assert exact >= 20  # about three in four


@pytest.mark.parametrize("version", [1, 2])
def test_dust_payout_goes_to_the_fee(version: int) -> None:
    ch = channel(version)
    c = 600_000
    sig_c = sign_payment(CLIENT, ch, TXID, c)
    full = build_settlement(ch, TXID, CHANNEL_VALUE, c, sig_c, SERVER, PAYOUT_SCRIPT, 1000)
    # Shrink the channel so that b is just above the fee: b - fee < 546.
    value = c + full.fee + 545
    small = build_settlement(ch, TXID, value, c, sign_payment(CLIENT, ch, TXID, c), SERVER, PAYOUT_SCRIPT, 1000)
    assert small.payout_value is None
    assert len(small.tx.vout) == 1
    assert small.fee == value - c
    assert small.fee >= fee_for_size(1000, small.size)
    assert consensus.verify_input(small.raw, 0, ch.script_pubkey, value)


@pytest.mark.parametrize("version", [1, 2])
def test_unaffordable_settlement_is_a_typed_error(version: int) -> None:
    ch = channel(version)
    c = 600_000
    value = c + 150  # b = 150, less than any settlement's fee at 1000 sat/kB
    sig_c = sign_payment(CLIENT, ch, TXID, c)
    with pytest.raises(SettlementUnaffordable) as info:
        build_settlement(ch, TXID, value, c, sig_c, SERVER, PAYOUT_SCRIPT, 1000)
    assert info.value.server_value == 150
    assert info.value.fee > 150
    with pytest.raises(SettlementUnaffordable):
        bitcoinj_settlement_fee_estimate(ch, TXID, value, c, sig_c, SERVER, PAYOUT_SCRIPT, 1000)


def test_exhausted_channel_with_a_dust_payout_cannot_settle() -> None:
    """c = 0 and b - fee is dust: leaving the payout out would leave no output at all."""
    ch = channel(2)
    value = 1500
    sig_c = sign_payment(CLIENT, ch, TXID, 0)
    with pytest.raises(SettlementUnaffordable):
        build_settlement(ch, TXID, value, 0, sig_c, SERVER, PAYOUT_SCRIPT, 5000)


def test_the_client_signature_must_match_the_change() -> None:
    ch = channel(1)
    sig_c = sign_payment(CLIENT, ch, TXID, 5000)
    with pytest.raises(ValueError):
        build_settlement(ch, TXID, CHANNEL_VALUE, 0, sig_c, SERVER, PAYOUT_SCRIPT, 1000)


@pytest.mark.parametrize("version, bug_bytes", [(1, 41), (2, 43)])
@pytest.mark.parametrize("rate", [1000, 100_000])
def test_bitcoinj_estimate_is_our_fee_plus_its_bug(version: int, bug_bytes: int, rate: int) -> None:
    """bitcoinj prices ``size(tx with provisional sig) + 40 + varint_size(n)``; we price the
    real final size. With equal signature lengths the gap is exactly 41 (v1) / 43 (v2) bytes at
    the rate; a provisional signature one byte shorter or longer than our final one moves it by
    that byte."""
    c = 500_000
    ch, sig_c, ours = _settle(version, c, rate)
    theirs = bitcoinj_settlement_fee_estimate(ch, TXID, CHANNEL_VALUE, c, sig_c, SERVER, PAYOUT_SCRIPT, rate)
    script_sig = bytes(ours.tx.vin[0].scriptSig)
    n = 36 + len(compact_size(len(script_sig))) + len(script_sig) + 4
    assert 40 + len(compact_size(n)) == bug_bytes
    assert theirs > ours.fee
    assert abs(theirs - fee_for_size(rate, ours.size + bug_bytes)) <= rate // 1000 + 1


def test_payout_to_other_script_types() -> None:
    for script in (p2sh_script(b"\x51"), bytes.fromhex("0014") + b"\x01" * 20, p2pkh_script(signer("x").public_key)):
        _, _, result = _settle(2, 10_000, 2000, payout_script=script)
        assert bytes(result.tx.vout[-1].scriptPubKey) == script
        assert fee_for_size(2000, result.size) <= result.fee <= fee_for_size(2000, result.size + 2)
