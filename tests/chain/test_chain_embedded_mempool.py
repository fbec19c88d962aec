"""
The embedded node refuses what Bitcoin Core's sendrawtransaction refuses, with Core's reasons,
and what it accepts the kernel then accepts in a block (the judge and the kernel agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from bitcoin.core import COutPoint, CScript, CTransaction, CTxIn, CTxOut

from chain_backends import Backend, embedded_backend
from chain_txs import ANYONE_CAN_SPEND, Coin, Key, spend, txid_of
from twisted_paychan.chain.embedded.chain import EmbeddedChain
from twisted_paychan.chain.embedded.node import RegtestNode
from twisted_paychan.chain.types import BroadcastRejected, OutPoint, TxState, display_hex

ALICE = Key.from_seed(b"mempool alice")
BOB = Key.from_seed(b"mempool bob")
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    made = embedded_backend(tmp_path)
    yield made
    made.close()


def _node(backend: Backend) -> RegtestNode:
    chain = backend.chain
    assert isinstance(chain, EmbeddedChain)
    return chain.node


def _coin(backend: Backend, value: int = 100_000, segwit: bool = False) -> Coin:
    script = ALICE.p2wpkh if segwit else ALICE.p2pkh
    return Coin(backend.fund(script, value), value, ALICE, segwit)


def _rejected(node: RegtestNode, raw: bytes) -> BroadcastRejected:
    with pytest.raises(BroadcastRejected) as info:
        node.accept(raw)
    return info.value


def _mined(backend: Backend, raw: bytes) -> None:
    """The kernel agrees: the transaction confirms in our next block."""
    backend.mine(1)
    assert _node(backend).tx_status(txid_of(raw)).state is TxState.CONFIRMED


def _high_s(raw: bytes) -> bytes:
    """The same transaction with its first signature's S replaced by n - S (valid, non-standard)."""
    tx = CTransaction.deserialize(raw)
    script_sig = bytes(tx.vin[0].scriptSig)
    sig_len = script_sig[0]
    sig = script_sig[1 : 1 + sig_len]
    r_len = sig[3]
    r = sig[4 : 4 + r_len]
    s = int.from_bytes(sig[6 + r_len : -1], "big")
    s_bytes = (SECP256K1_ORDER - s).to_bytes(33, "big").lstrip(b"\x00")
    if s_bytes[0] & 0x80:
        s_bytes = b"\x00" + s_bytes
    body = b"\x02" + bytes([r_len]) + r + b"\x02" + bytes([len(s_bytes)]) + s_bytes
    new_sig = b"\x30" + bytes([len(body)]) + body + sig[-1:]
    new_script_sig = bytes([len(new_sig)]) + new_sig + script_sig[1 + sig_len :]
    old = bytes([len(script_sig)]) + script_sig
    assert raw.count(old) == 1
    return raw.replace(old, bytes([len(new_script_sig)]) + new_script_sig)


def test_bad_signature(backend: Backend) -> None:
    rejected = _rejected(_node(backend), spend([_coin(backend)], [(BOB.p2pkh, 99_000)], corrupt=True))
    assert rejected.reason.startswith("mempool-script-verify-flag-failed (")  # Core 31
    assert rejected.code == -26


def test_high_s_signature_is_refused_by_policy(backend: Backend) -> None:
    raw = _high_s(spend([_coin(backend)], [(BOB.p2pkh, 99_000)]))
    rejected = _rejected(_node(backend), raw)
    assert rejected.reason == ("mempool-script-verify-flag-failed "
                               "(signature not strict DER, high S, or scriptSig not push-only)")


def test_segwit_spend_is_mined_with_a_witness_commitment(backend: Backend) -> None:
    node = _node(backend)
    raw = spend([_coin(backend, segwit=True)], [(BOB.p2wpkh, 99_000)])
    node.accept(raw)
    _mined(backend, raw)
    assert raw in (node.block(node.block_hash_at(node.height)) or b"")  # with its witness
    coinbase_outputs = [bytes(o.scriptPubKey) for o in _coinbase(node).vout]
    assert any(script.startswith(b"\x6a\x24\xaa\x21\xa9\xed") for script in coinbase_outputs)


def _coinbase(node: RegtestNode) -> CTransaction:
    from bitcoin.core import CBlock

    return CBlock.deserialize(node.block_at(node.height)).vtx[0]


def test_missing_and_spent_inputs(backend: Backend) -> None:
    node = _node(backend)
    ghost = Coin(OutPoint(b"\x07" * 32, 3), 100_000, ALICE)
    assert _rejected(node, spend([ghost], [(BOB.p2pkh, 99_000)])).code == -25
    coin = _coin(backend)
    node.accept(spend([coin], [(BOB.p2pkh, 99_000)]))
    backend.mine(1)
    rejected = _rejected(node, spend([coin], [(ALICE.p2pkh, 98_000)]))
    assert (rejected.reason, rejected.code) == ("bad-txns-inputs-missingorspent", -25)
    out_of_range = Coin(OutPoint(coin.outpoint.txid, 7), 100_000, ALICE)
    assert _rejected(node, spend([out_of_range], [(BOB.p2pkh, 99_000)])).code == -25


def test_double_spend_against_the_mempool(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend)
    first = spend([coin], [(BOB.p2pkh, 99_000)])
    node.accept(first)
    cheaper = spend([coin], [(ALICE.p2pkh, 99_500)])
    rejected = _rejected(node, cheaper)
    assert (rejected.reason, rejected.code) == (
        f"insufficient fee, rejecting replacement {display_hex(txid_of(cheaper))}, less fees than conflicting txs; "
        "0.000005 < 0.00001", -26)
    _mined(backend, first)


def test_chained_mempool_transactions_are_mined_in_order(backend: Backend) -> None:
    node = _node(backend)
    parent = spend([_coin(backend)], [(BOB.p2pkh, 99_000)])
    child = spend([Coin(OutPoint(txid_of(parent), 0), 99_000, BOB)], [(ALICE.p2pkh, 98_000)])
    assert _rejected(node, child).code == -25  # before its parent
    node.accept(parent)
    node.accept(child)
    assert [u.outpoint for u in node.unspent_outputs(ALICE.p2pkh)] == [OutPoint(txid_of(child), 0)]
    _mined(backend, child)
    assert node.tx_status(txid_of(parent)).block_height == node.height


def test_non_final_by_height(backend: Backend) -> None:
    node = _node(backend)
    raw = spend([_coin(backend)], [(BOB.p2pkh, 99_000)], lock_time=node.height + 1, sequence=0xFFFFFFFE)
    assert _rejected(node, raw).reason == "non-final"
    backend.mine(1)  # now the next block is above the lock height
    node.accept(raw)
    _mined(backend, raw)


def test_time_lock_waits_for_median_time_past(backend: Backend) -> None:
    """A refund-shaped spend: nLockTime E (a timestamp), sequence 0xFFFFFFFE, P2PKH."""
    node = _node(backend)
    coin = _coin(backend)
    lock_time = node.tip().time + 3_600
    raw = spend([coin], [(BOB.p2pkh, 99_000)], lock_time=lock_time, sequence=0xFFFFFFFE)
    assert _rejected(node, raw).reason == "non-final"

    backend.advance(lock_time + 60 - node.tip().time)
    backend.mine(1)
    assert node.tip().time > lock_time  # the block clock is past E...
    assert node.tip().median_time_past <= lock_time  # ...but BIP113 judges by the median
    assert _rejected(node, raw).reason == "non-final"

    backend.mine(4)
    assert node.tip().median_time_past <= lock_time
    assert _rejected(node, raw).reason == "non-final"
    backend.mine(1)  # 6 of the last 11 blocks are now after E
    assert node.tip().median_time_past > lock_time
    node.accept(raw)
    _mined(backend, raw)


def test_lock_time_equal_to_median_time_past_is_not_final(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend)
    backend.advance(1_000)
    backend.mine(11)
    raw = spend([coin], [(BOB.p2pkh, 99_000)], lock_time=node.median_time_past(), sequence=0)
    assert _rejected(node, raw).reason == "non-final"
    backend.advance(1)
    backend.mine(6)
    node.accept(raw)


def test_immature_coinbase(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    clock.advance(1_700_000_000)
    node = RegtestNode(tmp_path / "node", clock)
    try:
        node.generate(99)
        [first] = [u for u in node.unspent_outputs(ANYONE_CAN_SPEND) if u.height == 1]
        assert first.coinbase
        raw = spend([Coin(first.outpoint, first.value, None)], [(BOB.p2pkh, first.value - 1_000)])
        rejected = _rejected(node, raw)
        assert (rejected.reason, rejected.code) == ("bad-txns-premature-spend-of-coinbase", -26)
        node.generate(1)  # the next block is 100 blocks after the coinbase's
        node.accept(raw)
        node.generate(1)
        assert node.tx_status(txid_of(raw)).confirmations == 1
    finally:
        node.close()


def test_relative_lock_time_bip68(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend)
    raw = spend([coin], [(BOB.p2pkh, 99_000)], sequence=3, version=2)
    assert _rejected(node, raw).reason == "non-BIP68-final"
    backend.mine(1)
    assert _rejected(node, raw).reason == "non-BIP68-final"
    backend.mine(1)  # the coin has 3 confirmations once in the next block
    node.accept(raw)
    _mined(backend, raw)


def test_fee_and_value_rules(backend: Backend) -> None:
    node = _node(backend)
    coin = _coin(backend)
    assert _rejected(node, spend([coin], [(BOB.p2pkh, 100_000)])).reason.startswith("min relay fee not met, 0 < ")
    assert _rejected(node, spend([coin], [(BOB.p2pkh, 100_001)])).reason == "bad-txns-in-belowout"
    assert _rejected(node, spend([coin], [(BOB.p2pkh, 90_000), (ALICE.p2pkh, 545)])).reason == "dust"
    node.accept(spend([coin], [(BOB.p2pkh, 90_000), (ALICE.p2pkh, 546)]))


def test_decode_failures_and_coinbases(backend: Backend) -> None:
    node = _node(backend)
    raw = spend([_coin(backend)], [(BOB.p2pkh, 99_000)])
    rejected = _rejected(node, raw + b"\x00")
    assert rejected.code == -22 and rejected.reason.startswith("TX decode failed")
    assert _rejected(node, b"\x01\x02").code == -22
    # A coinbase already in the chain is simply known; a new one is refused.
    assert node.accept(_coinbase(node).serialize()) == _coinbase(node).GetTxid()
    fresh = CTransaction([CTxIn(COutPoint(), CScript([1_000_000, b"fresh"]))], [CTxOut(1_000, CScript(BOB.p2pkh))])
    assert _rejected(node, fresh.serialize()).reason == "coinbase"
