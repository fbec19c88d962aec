"""Parsing (legacy and segwit), txids, bitcoinj's sanity check, contract checks (spec §4.6,
§4.10, §5 step 5.3)."""

from __future__ import annotations

import pytest
from bitcoin.core import CMutableTransaction, CScript, CTransaction, CTxInWitness, CTxWitness
from bitcoin.core.script import SIGVERSION_WITNESS_V0, CScriptWitness, SignatureHash

from bitcoin_primitives_helpers import CHANNEL_VALUE, CLIENT, FUNDER, SERVER, channel, contract_tx
from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin import transactions as tx_mod
from twisted_paychan.bitcoin.contract import ContractError, check_channel_value, check_contract, contract_output
from twisted_paychan.bitcoin.scripts import ChannelScript, hash160, p2pkh_script
from twisted_paychan.bitcoin.signatures import sign
from twisted_paychan.bitcoin.transactions import TransactionParseError, TransactionSanityError, check_transaction_sanity
from twisted_paychan.bitcoin.txid import display_from_internal, display_txid, internal_from_display, txid
from twisted_paychan.constants import MAX_MONEY


def _tx(inputs: list[tuple[bytes, int]], values: list[int], script_sig: bytes = b"") -> tx_mod.Transaction:
    return tx_mod.make_transaction(
        [tx_mod.tx_input(h, n, 0xFFFFFFFF, script_sig) for h, n in inputs],
        [tx_mod.tx_output(v, b"\x51") for v in values],
    )


def test_compact_size() -> None:
    assert compact(0) == "00" and compact(252) == "fc"
    assert compact(253) == "fdfd00" and compact(0xFFFF) == "fdffff"
    assert compact(0x10000) == "fe00000100"
    assert compact(2**32) == "ff0000000001000000"


def compact(n: int) -> str:
    return tx_mod.compact_size(n).hex()


def test_sane_transaction_passes() -> None:
    check_transaction_sanity(_tx([(b"\x01" * 32, 0), (b"\x01" * 32, 1)], [0, MAX_MONEY]))


@pytest.mark.parametrize(
    "tx",
    [
        _tx([], [1]),
        _tx([(b"\x01" * 32, 0)], []),
        _tx([(b"\x01" * 32, 0), (b"\x01" * 32, 0)], [1]),
        _tx([(b"\x01" * 32, 0)], [-1]),
        _tx([(b"\x01" * 32, 0)], [MAX_MONEY, 1]),
        _tx([(b"\x01" * 32, 0)], [MAX_MONEY + 1]),
        _tx([(b"\x01" * 32, 0), (b"\x00" * 32, 0xFFFFFFFF)], [1]),  # a coinbase input among others
        _tx([(b"\x00" * 32, 0xFFFFFFFF)], [1], b"\x51"),  # coinbase scriptSig too short
        _tx([(b"\x00" * 32, 0xFFFFFFFF)], [1], b"\x51" * 101),  # ... too long
        _tx([(b"\x01" * 32, 0)], [1], b"\x00" * 1_000_000),  # larger than 1,000,000 bytes
    ],
)
def test_insane_transactions_fail(tx: tx_mod.Transaction) -> None:
    with pytest.raises(TransactionSanityError):
        check_transaction_sanity(tx)


@pytest.mark.parametrize("size", [2, 100])
def test_a_lone_null_outpoint_is_a_coinbase_and_passes(size: int) -> None:
    """bitcoinj's nuance (§5 step 5.3): it checks only the coinbase scriptSig's length."""
    tx = _tx([(b"\x00" * 32, 0xFFFFFFFF)], [1], b"\x51" * size)
    assert tx_mod.is_coinbase(tx)
    check_transaction_sanity(tx)
    # Only the null outpoint (all-zero hash, index 0xFFFFFFFF) is a coinbase.
    assert not tx_mod.is_coinbase(_tx([(b"\x00" * 32, 0)], [1]))
    check_transaction_sanity(_tx([(b"\x00" * 32, 0)], [1]))


def test_parse_rejects_garbage_and_trailing_bytes() -> None:
    _, contract = contract_tx(channel(1))
    raw = tx_mod.serialize(contract)
    assert tx_mod.serialize(tx_mod.parse_transaction(raw)) == raw
    for bad in (b"", raw[:-1], raw + b"\x00", b"\x01\x00\x00\x00"):
        with pytest.raises(TransactionParseError):
            tx_mod.parse_transaction(bad)


def test_txid_orders() -> None:
    _, contract = contract_tx(channel(2))
    internal = txid(contract)
    assert txid(tx_mod.serialize(contract)) == internal == bytes(contract.GetTxid())
    assert display_txid(contract) == internal[::-1].hex()
    assert internal_from_display(display_from_internal(internal)) == internal
    with pytest.raises(ValueError):
        internal_from_display(b"\x00" * 31)


def _segwit_contract(ch: ChannelScript) -> tuple[tx_mod.Transaction, bytes, int]:
    """A contract funded from a P2WPKH coin: witness serialisation, BIP143-signed."""
    coin_value = 3 * CHANNEL_VALUE
    coin_script = b"\x00\x14" + hash160(FUNDER.public_key)
    tx = CMutableTransaction(
        [tx_mod.tx_input(b"\x99" * 32, 1, 0xFFFFFFFF)],
        [contract_output(ch, CHANNEL_VALUE), tx_mod.tx_output(coin_value - CHANNEL_VALUE - 300, coin_script)],
    )
    script_code = CScript(p2pkh_script(FUNDER.public_key))
    digest = SignatureHash(script_code, tx, 0, 0x01, amount=coin_value, sigversion=SIGVERSION_WITNESS_V0)
    witness = CScriptWitness([sign(FUNDER, bytes(digest), 0x01), FUNDER.public_key])
    tx.wit = CTxWitness([CTxInWitness(witness)])
    return CTransaction.from_tx(tx), coin_script, coin_value


def test_segwit_contract_parses_and_keeps_its_txid() -> None:
    ch = channel(2)
    contract, coin_script, coin_value = _segwit_contract(ch)
    raw = tx_mod.serialize(contract)
    stripped = tx_mod.serialize(contract, include_witness=False)
    assert raw[4:6] == b"\x00\x01" and len(raw) > len(stripped)
    parsed = tx_mod.parse_transaction(raw)
    assert txid(parsed) == txid(stripped) == txid(raw)
    assert consensus.verify_input(raw, 0, coin_script, coin_value)
    assert check_contract(parsed, ch) == CHANNEL_VALUE


@pytest.mark.parametrize("version", [1, 2])
def test_check_contract(version: int) -> None:
    ch = channel(version)
    _, contract = contract_tx(ch)
    assert check_contract(contract, ch) == CHANNEL_VALUE
    swapped = ChannelScript(version, SERVER.public_key, CLIENT.public_key, ch.expire_time)
    with pytest.raises(ContractError):
        check_contract(contract, swapped)
    if version == 2:
        with pytest.raises(ContractError):  # a different E is a different script
            check_contract(contract, ChannelScript.v2(ch.client_key, ch.server_key, ch.expire_time + 1))  # type: ignore[operator]
    zero = tx_mod.make_transaction(list(contract.vin), [tx_mod.tx_output(0, ch.script_pubkey)] + list(contract.vout[1:]))
    with pytest.raises(ContractError):
        check_contract(zero, ch)
    # The channel output must be at index 0.
    moved = tx_mod.make_transaction(list(contract.vin), list(reversed(contract.vout)))
    with pytest.raises(ContractError):
        check_contract(moved, ch)
    # A P2PKH output carrying the redeem script's hash is not the P2SH output (§6 step 5.7).
    if version == 2:
        assert ch.redeem_script is not None
        fake = b"\x76\xa9\x14" + hash160(ch.redeem_script) + b"\x88\xac"
        wrong = tx_mod.make_transaction(list(contract.vin), [tx_mod.tx_output(CHANNEL_VALUE, fake)])
        with pytest.raises(ContractError):
            check_contract(wrong, ch)


def test_check_channel_value() -> None:
    check_channel_value(1, 1546)
    check_channel_value(2, 1546)
    with pytest.raises(ValueError):
        check_channel_value(1, 1545)
    with pytest.raises(ValueError):
        check_channel_value(2, 539, refund_fee=0)
    check_channel_value(2, 546, refund_fee=0)
