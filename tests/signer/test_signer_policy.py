"""What ``paychan signer`` signs and what it refuses (issue 18): a settlement pays the server at
least the best payment it was shown, on the contract output named, to its own payout script; a
v1 refund once per key, locked until the expiry; a funding only of its own coins and within the
daily limit. Every transaction it signs passes Bitcoin Core's script interpreter
(``verify_input``, py-bitcoinkernel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bitcoin.core import CTransaction

from signer_setup import NOW, VALUE, Channel, signing_service
from twisted_paychan.bitcoin.addresses import hash160, p2wpkh_script
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.bitcoin.keys import Signer
from twisted_paychan.bitcoin.payment import sign_payment
from twisted_paychan.bitcoin.refund import build_refund, verify_server_refund_signature
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.transactions import make_transaction, serialize, tx_input, tx_output
from twisted_paychan.chain.types import OutPoint, Utxo
from twisted_paychan.constants import FINAL_SEQUENCE, TX_VERSION
from twisted_paychan.signer.ledger import DAY
from twisted_paychan.signer.protocol import Insufficient, Refused

ELSEWHERE = p2wpkh_script(hash160(b"someone else's key"))


@pytest.fixture
def service(tmp_path: Path):
    s = signing_service(tmp_path)
    yield s
    s.wallet.close()
    s.ledger.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_settlement_pays_the_best_payment_to_the_signers_own_script(service, version: int) -> None:
    channel = Channel.open(service, version)
    raw, rate, fee, payout_key = channel.settle(service, client_change=400_000)
    assert rate == 1000 and fee > 0
    assert verify_input(raw, 0, channel.script.script_pubkey, VALUE)
    tx = CTransaction.deserialize(raw)
    assert [(bytes(i.prevout.hash), i.prevout.n) for i in tx.vin] == [(channel.contract_txid, 0)]
    payout, key = service.payout_script(channel.contract_txid)
    assert key == payout_key
    assert [(o.nValue, bytes(o.scriptPubKey)) for o in tx.vout] == [
        (400_000, channel.script.client_change_script), (600_000 - fee, payout)]


def test_a_settlement_paying_less_than_the_best_payment_seen_is_refused(service) -> None:
    channel = Channel.open(service)
    channel.settle(service, client_change=400_000)  # b = 600 000 shown
    with pytest.raises(Refused, match="pays the server 500000 sat, less than the best payment it was shown "
                                      r"\(600000 sat\)"):
        channel.settle(service, client_change=500_000)  # an older payment, signed by the client too
    raw, _, _, _ = channel.settle(service, client_change=300_000)  # a later one is fine
    assert verify_input(raw, 0, channel.script.script_pubkey, VALUE)


def test_a_settlement_spending_something_else_is_refused(service) -> None:
    channel = Channel.open(service)
    own, _ = service.new_address("p2wpkh")  # a coin of the signer's own, not a channel contract
    other = make_transaction([tx_input(b"\x22" * 32, 0, FINAL_SEQUENCE)], [tx_output(VALUE, own)], 0, TX_VERSION)
    with pytest.raises(Refused, match="does not pay this channel's contract output"):
        channel.settle(service, client_change=400_000, contract=serialize(other))


def test_a_settlement_needs_the_clients_signature_a_channel_key_and_a_sane_fee(service) -> None:
    channel = Channel.open(service)
    forged = sign_payment(Signer(bytes(31) + b"\x09"), channel.script, channel.contract_txid, 0)
    with pytest.raises(Refused, match="the client's signature on change 0 does not verify"):
        service.sign_settlement(2, channel.contract, channel.client.public_key, channel.server_key, channel.expiry, 0,
                                forged, [1000])
    stranger = Signer(bytes(31) + b"\x0b").public_key
    with pytest.raises(Refused, match="is not a channel key this signer handed out"):
        service.sign_settlement(2, channel.contract, channel.client.public_key, stranger, channel.expiry, 0,
                                channel.payment(0), [1000])
    with pytest.raises(Refused, match="fee rate 200000 sat/kB is above the signer's highest"):
        channel.settle(service, client_change=0, rates=(200_000,))


def test_an_unaffordable_settlement_is_signed_at_no_rate(service) -> None:
    channel = Channel.open(service)
    raw, rate, fee, _ = channel.settle(service, client_change=VALUE - 100)  # b = 100 sat pays no fee
    assert raw == b"" and rate == 1000 and fee > 100


def _v1_refund(channel: Channel, expiry: int) -> bytes:
    script = ChannelScript(1, channel.client.public_key, channel.server_key, expiry)
    return serialize(build_refund(script, channel.contract_txid, VALUE))


def test_a_v1_refund_is_signed_once_per_key_and_only_locked_until_the_expiry(service) -> None:
    channel = Channel.open(service, 1)
    with pytest.raises(Refused, match="less than 3600 s ahead"):
        service.sign_refund(channel.client.public_key, channel.server_key, NOW + 60, _v1_refund(channel, NOW + 60))
    with pytest.raises(Refused, match="is not the channel's expiry"):
        service.sign_refund(channel.client.public_key, channel.server_key, channel.expiry + 1,
                            _v1_refund(channel, channel.expiry))
    raw = _v1_refund(channel, channel.expiry)
    signature = service.sign_refund(channel.client.public_key, channel.server_key, channel.expiry, raw)
    verify_server_refund_signature(CTransaction.deserialize(raw), ChannelScript(1, channel.client.public_key,
                                                                                channel.server_key), signature)
    with pytest.raises(Refused, match="was signed already"):
        service.sign_refund(channel.client.public_key, channel.server_key, channel.expiry, raw)


def _coin(service, value: int, n: int) -> Utxo:
    script, _ = service.new_address("p2wpkh")
    return Utxo(OutPoint(bytes([n]) * 32, 0), value, script, 100)


def test_a_funding_above_the_daily_limit_is_refused(service) -> None:
    coins = [_coin(service, 1_000_000, 1), _coin(service, 1_000_000, 2)]
    funded = service.fund(ELSEWHERE, 60_000, 1000, coins)  # limit 100 000
    spent = {c.outpoint: c for c in coins}
    for index, point in enumerate(funded.spent):
        assert verify_input(funded.tx, index, spent[point].script_pubkey, spent[point].value)
    assert service.ledger.spent_since(NOW - DAY) == 60_000 + funded.fee
    with pytest.raises(Refused, match="would pass the daily limit of 100000 sat"):
        service.fund(ELSEWHERE, 40_000, 1000, coins)
    own, _ = service.new_address("p2wpkh")
    service.fund(own, 500_000, 1000, coins)  # to itself: only the fee leaves
    service.clock.advance(DAY)  # type: ignore[attr-defined]
    again = service.fund(ELSEWHERE, 60_000, 1000, coins)
    assert verify_input(again.tx, 0, coins[0].script_pubkey, coins[0].value)


def test_a_sweep_counts_everything_that_leaves(service) -> None:
    coins = [_coin(service, 60_000, 1), _coin(service, 50_000, 2)]
    with pytest.raises(Refused, match="daily limit"):
        service.fund(ELSEWHERE, 0, 1000, coins)
    swept = service.fund(ELSEWHERE, 0, 1000, coins[:1])
    assert swept.change_index is None and service.ledger.spent_since(NOW - DAY) == 60_000


def test_a_funding_spends_only_the_signers_coins(service) -> None:
    stranger = Utxo(OutPoint(b"\x05" * 32, 0), 1_000_000, ELSEWHERE, 100)
    with pytest.raises(Refused, match="is not a P2WPKH coin of this signer's"):
        service.fund(ELSEWHERE, 10_000, 1000, [stranger])
    with pytest.raises(Insufficient):
        service.fund(ELSEWHERE, 90_000, 1000, [_coin(service, 50_000, 1)])
