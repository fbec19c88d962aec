"""Every spend of the contract output, judged by Bitcoin Core (``consensus.verify_input``), and
a negative twin for each way it can go wrong (spec §4.3–4.9)."""

from __future__ import annotations

import pytest

from bitcoin_primitives_helpers import (
    CHANNEL_VALUE,
    CLIENT,
    E,
    PAYOUT_SCRIPT,
    SERVER,
    channel,
    contract_tx,
    high_s,
    replace_output,
    replace_script_sig,
)
from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin import transactions as tx_mod
from twisted_paychan.bitcoin.payment import build_payment, sign_payment, verify_payment_signature
from twisted_paychan.bitcoin.refund import (
    build_refund,
    build_signed_refund,
    client_refund_signature,
    server_refund_signature,
    verify_server_refund_signature,
    with_refund_script_sig,
)
from twisted_paychan.bitcoin.script_sigs import cooperative_script_sig, multisig_script_sig, v2_cooperative_script_sig
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.settlement import build_settlement
from twisted_paychan.bitcoin.sighash import signature_hash
from twisted_paychan.bitcoin.signatures import HighSSignature, SignatureDoesNotVerify, WrongSighashType, sign
from twisted_paychan.bitcoin.txid import txid

VERSIONS = [1, 2]


def judge(tx: tx_mod.Transaction, ch: ChannelScript, value: int = CHANNEL_VALUE) -> bool:
    return consensus.verify_input(tx_mod.serialize(tx), 0, ch.script_pubkey, value)


def judge_consensus_only(tx: tx_mod.Transaction, ch: ChannelScript, value: int = CHANNEL_VALUE) -> bool:
    return consensus.verify_input_consensus(tx_mod.serialize(tx), 0, ch.script_pubkey, value)


def unsigned_refund(ch: ChannelScript, contract_id: bytes, lock_time: int, sequence: int) -> tx_mod.Transaction:
    """Like ``build_refund``, but lets a test pick a lock time or sequence it would refuse."""
    return tx_mod.make_transaction(
        [tx_mod.tx_input(contract_id, 0, sequence)],
        [tx_mod.tx_output(CHANNEL_VALUE - 1000, ch.client_change_script)],
        lock_time,
    )


def v1_refund(
    ch: ChannelScript, contract_id: bytes, *, lock_time: int = E, sequence: int = 0xFFFFFFFE
) -> tx_mod.Transaction:
    unsigned = unsigned_refund(ch, contract_id, lock_time, sequence)
    sig_s = server_refund_signature(SERVER, unsigned, ch)
    verify_server_refund_signature(unsigned, ch, sig_s)
    sig_c = client_refund_signature(CLIENT, unsigned, ch)
    return with_refund_script_sig(unsigned, ch, sig_c, sig_s)


def v2_refund(
    ch: ChannelScript, contract_id: bytes, *, lock_time: int = E, sequence: int = 0xFFFFFFFE
) -> tx_mod.Transaction:
    """A v2 refund signed honestly, but possibly with a lock time or sequence of our choosing."""
    unsigned = unsigned_refund(ch, contract_id, lock_time, sequence)
    return with_refund_script_sig(unsigned, ch, client_refund_signature(CLIENT, unsigned, ch))


def completed_payment(ch: ChannelScript, contract_id: bytes, c: int) -> tx_mod.Transaction:
    """The payment tx for ``c`` completed by the server with an ALL signature and nothing added
    (a settlement that gives all of ``b`` to the fee)."""
    sig_c = sign_payment(CLIENT, ch, contract_id, c)
    tx = build_payment(ch, contract_id, c)
    sig_s = sign(SERVER, signature_hash(tx, 0, ch.script_code, 0x01), 0x01)
    return replace_script_sig(tx, cooperative_script_sig(ch, sig_c, sig_s))


def settlement(ch: ChannelScript, contract_id: bytes, c: int) -> tx_mod.Transaction:
    sig_c = sign_payment(CLIENT, ch, contract_id, c)
    verify_payment_signature(ch, contract_id, c, sig_c)
    return build_settlement(ch, contract_id, CHANNEL_VALUE, c, sig_c, SERVER, PAYOUT_SCRIPT, 1000).tx


# -- the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_contract_spends_its_coin(version: int) -> None:
    funding, contract = contract_tx(channel(version))
    coin = funding.vout[0]
    assert consensus.verify_input(tx_mod.serialize(contract), 0, bytes(coin.scriptPubKey), coin.nValue)


# -- refund ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_refund_is_valid(version: int) -> None:
    ch = channel(version)
    _, contract = contract_tx(ch)
    if version == 1:
        unsigned = build_refund(ch, txid(contract), CHANNEL_VALUE)
        assert unsigned.vin[0].scriptSig == b""  # PROVIDE_REFUND carries it unsigned
        refund = v1_refund(ch, txid(contract))
        assert tx_mod.serialize(refund) == tx_mod.serialize(
            with_refund_script_sig(
                unsigned, ch, client_refund_signature(CLIENT, unsigned, ch), server_refund_signature(SERVER, unsigned, ch)
            )
        )
    else:
        refund = build_signed_refund(CLIENT, ch, txid(contract), CHANNEL_VALUE)
    assert refund.nLockTime == E and refund.vin[0].nSequence == 0xFFFFFFFE and refund.nVersion == 1
    assert refund.vout[0].nValue == CHANNEL_VALUE - 1000
    assert bytes(refund.vout[0].scriptPubKey) == ch.client_change_script
    assert judge(refund, ch)


def test_v1_refund_script_sig_layout() -> None:
    ch = channel(1)
    refund = v1_refund(ch, b"\x44" * 32)
    script_sig = bytes(refund.vin[0].scriptSig)
    assert script_sig[0] == 0x00
    sig_c = script_sig[2 : 2 + script_sig[1]]
    sig_s = script_sig[3 + len(sig_c) :]
    assert sig_c[-1] == 0x01 and sig_s[-1] == 0x82
    assert judge(refund, ch)


def test_v2_refund_script_sig_layout() -> None:
    ch = channel(2)
    refund = build_signed_refund(CLIENT, ch, b"\x44" * 32, CHANNEL_VALUE)
    script_sig = bytes(refund.vin[0].scriptSig)
    n = script_sig[0]
    assert script_sig[n] == 0x01  # sig_C ends with ALL
    assert script_sig[1 + n :] == bytes.fromhex("0100") + bytes.fromhex("4c50") + ch.script_code
    assert judge(refund, ch)


def test_v2_refund_before_its_lock_time_fails() -> None:
    ch = channel(2)
    assert judge(v2_refund(ch, b"\x44" * 32), ch)
    assert not judge(v2_refund(ch, b"\x44" * 32, lock_time=E - 1), ch)
    assert not judge(v2_refund(ch, b"\x44" * 32, lock_time=800_000), ch)  # a height, not a time


def test_v2_refund_with_a_final_sequence_fails() -> None:
    ch = channel(2)
    assert not judge(v2_refund(ch, b"\x44" * 32, sequence=0xFFFFFFFF), ch)


def test_v1_refund_lock_is_not_in_the_script() -> None:
    """v1 has no CLTV: a final sequence or an early lock time is a script-valid spend; only
    finality (nLockTime with a non-final sequence) keeps it out of the chain before E. That is
    why the server refuses a PROVIDE_REFUND with sequence 0xFFFFFFFF (§5 step 5.5)."""
    ch = channel(1)
    assert judge(v1_refund(ch, b"\x44" * 32, sequence=0xFFFFFFFF), ch)
    assert judge(v1_refund(ch, b"\x44" * 32, lock_time=E - 1), ch)
    with pytest.raises(ValueError):
        build_refund(ch, b"\x44" * 32, CHANNEL_VALUE, sequence=0xFFFFFFFF)


def test_v1_refund_with_keys_swapped_fails() -> None:
    ch = channel(1)
    unsigned = build_refund(ch, b"\x44" * 32, CHANNEL_VALUE)
    sig_s = server_refund_signature(SERVER, unsigned, ch)
    sig_c = client_refund_signature(CLIENT, unsigned, ch)
    assert judge(replace_script_sig(unsigned, multisig_script_sig(sig_c, sig_s)), ch)
    assert not judge(replace_script_sig(unsigned, multisig_script_sig(sig_s, sig_c)), ch)


def test_v1_refund_server_signature_flags_and_high_s() -> None:
    ch = channel(1)
    unsigned = build_refund(ch, b"\x44" * 32, CHANNEL_VALUE)
    sig_s = server_refund_signature(SERVER, unsigned, ch)
    sig_c = client_refund_signature(CLIENT, unsigned, ch)
    # Wrong sighash byte on the server's signature: it no longer matches its digest.
    assert not judge(replace_script_sig(unsigned, multisig_script_sig(sig_c, sig_s[:-1] + b"\x81")), ch)
    with pytest.raises(WrongSighashType):
        all_signature = sign(SERVER, signature_hash(unsigned, 0, ch.script_code, 0x01), 0x01)
        verify_server_refund_signature(unsigned, ch, all_signature)
    # High S: CHECKMULTISIG accepts it by consensus, relay policy does not, and neither do we.
    flipped = replace_script_sig(unsigned, multisig_script_sig(sig_c, high_s(sig_s)))
    assert judge_consensus_only(flipped, ch)
    assert not judge(flipped, ch)
    with pytest.raises(HighSSignature):
        verify_server_refund_signature(unsigned, ch, high_s(sig_s))


def test_v1_refund_outputs_may_change_after_the_server_signed() -> None:
    """NONE|ANYONECANPAY: the server's signature commits to the input and lock time only."""
    ch = channel(1)
    unsigned = build_refund(ch, b"\x44" * 32, CHANNEL_VALUE)
    sig_s = server_refund_signature(SERVER, unsigned, ch)
    changed = replace_output(unsigned, 0, CHANNEL_VALUE - 5000)
    sig_c = client_refund_signature(CLIENT, changed, ch)
    assert judge(with_refund_script_sig(changed, ch, sig_c, sig_s), ch)
    # ... but the client's ALL signature does commit to them.
    refund = with_refund_script_sig(unsigned, ch, client_refund_signature(CLIENT, unsigned, ch), sig_s)
    assert not judge(replace_output(refund, 0, CHANNEL_VALUE - 5000), ch)


# -- payments and settlement ---------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("c", [999_000, 546, 0])
def test_settlement_is_valid(version: int, c: int) -> None:
    ch = channel(version)
    _, contract = contract_tx(ch)
    tx = settlement(ch, txid(contract), c)
    assert judge(tx, ch)
    assert tx.vin[0].nSequence == 0xFFFFFFFF and tx.nLockTime == 0 and tx.nVersion == 1
    if c:
        assert tx.vout[0].nValue == c and bytes(tx.vout[0].scriptPubKey) == ch.client_change_script
    assert bytes(tx.vout[-1].scriptPubKey) == PAYOUT_SCRIPT


@pytest.mark.parametrize("version", VERSIONS)
def test_completed_payment_is_valid(version: int) -> None:
    ch = channel(version)
    assert judge(completed_payment(ch, b"\x55" * 32, 400_000), ch)


@pytest.mark.parametrize("version", VERSIONS)
def test_payment_signature_survives_extra_outputs_and_inputs(version: int) -> None:
    """SINGLE|ANYONECANPAY lets the server add its payout and other inputs."""
    ch = channel(version)
    tx = settlement(ch, b"\x55" * 32, 700_000)
    two_inputs = tx_mod.make_transaction(
        list(tx.vin) + [tx_mod.tx_input(b"\x66" * 32, 3, 0)], list(tx.vout)
    )
    # The server's ALL signature now fails (it covered one input), so re-sign it; the client's
    # 0x83 signature is reused unchanged.
    sig_c = sign_payment(CLIENT, ch, b"\x55" * 32, 700_000)
    sig_s = sign(SERVER, signature_hash(two_inputs, 0, ch.script_code, 0x01), 0x01)
    assert judge(replace_script_sig(two_inputs, cooperative_script_sig(ch, sig_c, sig_s)), ch)


@pytest.mark.parametrize("version", VERSIONS)
def test_settlement_with_signatures_swapped_fails(version: int) -> None:
    ch = channel(version)
    tx = settlement(ch, b"\x55" * 32, 700_000)
    sig_c = sign_payment(CLIENT, ch, b"\x55" * 32, 700_000)
    sig_s = sign(SERVER, signature_hash(tx, 0, ch.script_code, 0x01), 0x01)
    assert judge(replace_script_sig(tx, cooperative_script_sig(ch, sig_c, sig_s)), ch)
    assert not judge(replace_script_sig(tx, cooperative_script_sig(ch, sig_s, sig_c)), ch)


@pytest.mark.parametrize("version", VERSIONS)
def test_contract_with_keys_swapped_is_a_different_script(version: int) -> None:
    ch = channel(version)
    swapped = ChannelScript(version, SERVER.public_key, CLIENT.public_key, E)
    assert swapped.script_pubkey != ch.script_pubkey
    tx = settlement(ch, b"\x55" * 32, 700_000)
    assert not judge(tx, swapped)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("c, wrong", [(700_000, 0x01), (700_000, 0x82), (700_000, 0x03), (0, 0x83), (0, 0x02)])
def test_wrong_sighash_byte_fails(version: int, c: int, wrong: int) -> None:
    ch = channel(version)
    tx = settlement(ch, b"\x55" * 32, c)
    sig_c = sign_payment(CLIENT, ch, b"\x55" * 32, c)
    sig_s = sign(SERVER, signature_hash(tx, 0, ch.script_code, 0x01), 0x01)
    assert not judge(replace_script_sig(tx, cooperative_script_sig(ch, sig_c[:-1] + bytes([wrong]), sig_s)), ch)
    with pytest.raises((WrongSighashType, SignatureDoesNotVerify)):
        verify_payment_signature(ch, b"\x55" * 32, c, sig_c[:-1] + bytes([wrong]))


@pytest.mark.parametrize("version", VERSIONS)
def test_output_0_changed_after_signing_fails(version: int) -> None:
    ch = channel(version)
    tx = settlement(ch, b"\x55" * 32, 700_000)
    assert not judge(replace_output(tx, 0, 700_001), ch)
    assert not judge(replace_output(tx, 0, 700_000, PAYOUT_SCRIPT), ch)
    # Changing the payout (output 1) breaks only the server's ALL signature; re-signed it passes.
    moved = replace_output(tx, 1, tx.vout[1].nValue - 1)
    assert not judge(moved, ch)
    sig_c = sign_payment(CLIENT, ch, b"\x55" * 32, 700_000)
    sig_s = sign(SERVER, signature_hash(moved, 0, ch.script_code, 0x01), 0x01)
    assert judge(replace_script_sig(moved, cooperative_script_sig(ch, sig_c, sig_s)), ch)


@pytest.mark.parametrize("version", VERSIONS)
def test_high_s_client_signature_is_non_standard(version: int) -> None:
    ch = channel(version)
    tx = settlement(ch, b"\x55" * 32, 700_000)
    sig_c = sign_payment(CLIENT, ch, b"\x55" * 32, 700_000)
    sig_s = sign(SERVER, signature_hash(tx, 0, ch.script_code, 0x01), 0x01)
    flipped = replace_script_sig(tx, cooperative_script_sig(ch, high_s(sig_c), sig_s))
    assert judge_consensus_only(flipped, ch)  # consensus has no LOW_S rule
    assert not judge(flipped, ch)  # relay policy does
    with pytest.raises(HighSSignature):
        verify_payment_signature(ch, b"\x55" * 32, 700_000, high_s(sig_c))


def test_v2_cooperative_script_sig_layout() -> None:
    ch = channel(2)
    tx = settlement(ch, b"\x55" * 32, 700_000)
    script_sig = bytes(tx.vin[0].scriptSig)
    assert script_sig.endswith(bytes.fromhex("514c50") + ch.script_code)
    sig_c = sign_payment(CLIENT, ch, b"\x55" * 32, 700_000)
    assert script_sig.startswith(bytes([len(sig_c)]) + sig_c)
    sig_s = script_sig[1 + len(sig_c) + 1 : 1 + len(sig_c) + 1 + script_sig[1 + len(sig_c)]]
    assert script_sig == v2_cooperative_script_sig(sig_c, sig_s, ch.script_code)
    assert judge(tx, ch)


def test_payment_signature_checks() -> None:
    ch = channel(2)
    sig = sign_payment(CLIENT, ch, b"\x55" * 32, 5000)
    assert sig[-1] == 0x83
    verify_payment_signature(ch, b"\x55" * 32, 5000, sig)
    with pytest.raises(SignatureDoesNotVerify):
        verify_payment_signature(ch, b"\x55" * 32, 4999, sig)
    with pytest.raises(SignatureDoesNotVerify):
        verify_payment_signature(ch, b"\x56" * 32, 5000, sig)
    with pytest.raises(WrongSighashType):
        verify_payment_signature(ch, b"\x55" * 32, 0, sig)
    final = sign_payment(CLIENT, ch, b"\x55" * 32, 0)
    assert final[-1] == 0x82
    verify_payment_signature(ch, b"\x55" * 32, 0, final)
    with pytest.raises(WrongSighashType):
        verify_payment_signature(ch, b"\x55" * 32, 5000, final)
    # A v1 signature is not a v2 signature: the script code differs.
    with pytest.raises(SignatureDoesNotVerify):
        verify_payment_signature(channel(1), b"\x55" * 32, 5000, sig)
