"""Bitcoin Core's output policy (bitcoin.policy), and that every user of it agrees."""

from __future__ import annotations

from bitcoin.core import CScript, CTxOut
from hypothesis import given
from hypothesis import strategies as st

from twisted_paychan.bitcoin import policy, settlement
from twisted_paychan.chain.embedded import rules
from twisted_paychan.constants import P2PKH_DUST_LIMIT, P2SH_DUST_LIMIT, P2WPKH_DUST_LIMIT
from twisted_paychan.wallet import coinselect

P2PKH = bytes.fromhex("76a914") + b"\x11" * 20 + bytes.fromhex("88ac")
P2SH = bytes.fromhex("a914") + b"\x22" * 20 + bytes.fromhex("87")
P2WPKH = bytes.fromhex("0014") + b"\x33" * 20
P2TR = bytes.fromhex("5120") + b"\x44" * 32
OP_RETURN = bytes.fromhex("6a04deadbeef")


def test_dust_limits_are_the_named_constants() -> None:
    assert policy.dust_threshold(P2PKH) == P2PKH_DUST_LIMIT
    assert policy.dust_threshold(P2SH) == P2SH_DUST_LIMIT
    assert policy.dust_threshold(P2WPKH) == P2WPKH_DUST_LIMIT
    assert policy.dust_threshold(P2TR) == 330


def test_witness_programs() -> None:
    assert policy.is_witness_program(P2WPKH) and policy.is_witness_program(P2TR)
    assert not policy.is_witness_program(P2PKH) and not policy.is_witness_program(P2SH)
    assert not policy.is_witness_program(bytes.fromhex("0014") + b"\x00" * 19)  # push too short
    assert not policy.is_witness_program(bytes.fromhex("6102") + b"\x00" * 2)  # 0x61 is not OP_n


def test_unspendable_scripts_are_never_dust_except_to_the_wallet() -> None:
    # Core exempts OP_RETURN and over-long scripts; the wallet still refuses a sub-dust amount.
    for script in (OP_RETURN, b"\x51" * 10_001):
        assert policy.is_unspendable(script)
        assert policy.dust_threshold(script) == 0
        assert settlement.dust_threshold(script) == 0
        assert rules.dust_threshold(CTxOut(0, CScript(script))) == 0
        assert coinselect.dust_threshold(script) == policy.dust_threshold(script, exempt_unspendable=False) > 0
    assert not policy.is_unspendable(b"\x51" * 10_000)


@given(st.one_of(st.binary(max_size=60), st.sampled_from([P2PKH, P2SH, P2WPKH, P2TR, OP_RETURN])))
def test_settlement_wallet_and_chains_share_one_rule(script: bytes) -> None:
    expected = policy.dust_threshold(script)
    assert settlement.dust_threshold(script) == expected
    assert rules.dust_threshold(CTxOut(0, CScript(script))) == expected
    if not policy.is_unspendable(script):
        assert coinselect.dust_threshold(script) == expected
