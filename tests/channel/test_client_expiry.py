"""The client always gets its money back (spec §10.3 with its recommendations): after expiry it
broadcasts the contract and its refund, retrying on every block until Bitcoin Core's rules
(BIP 113 median time past) accept the refund; a settlement seen on the chain is recorded
instead."""

import pytest

from channel_pair import Pair, result_of
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.records import ClientChannelState


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


def abandoned_channel(version):
    """A channel whose server vanished after the open (it never settles)."""
    pair = Pair()
    sel = VersionSelector.VERSION_1 if version == 1 else VersionSelector.VERSION_2
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=sel, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(10_000)
    pair.pump()
    result_of(d)
    pair.channels.stop()  # the server is gone for good
    client.disconnect()
    pair.pump()
    return pair, txid


def test_refund_after_expiry_confirms(version):
    pair, txid = abandoned_channel(version)
    record = result_of(pair.client_store.client_channel(txid))
    refunds = pair.client_manager
    result_of(refunds.start())
    # Time passes block by block (10 minutes each) until well past E.
    while pair.clock.seconds() < record.expiry + 3 * 3600:
        pair.clock.advance(600)
        pair.chain.mine(1)
        pair.clock.advance(0)
    pair.chain.mine(1)
    pair.clock.advance(0)
    pair.clock.advance(0)
    got = result_of(pair.client_store.client_channel(txid))
    assert got.state is ClientChannelState.REFUNDED and got.close_tx == record.refund
    from bitcoin.core import CTransaction

    refund_txid = CTransaction.deserialize(record.refund).GetTxid()
    assert result_of(pair.chain.tx_status(refund_txid)).state is TxState.CONFIRMED


def test_refund_waits_for_median_time_past(version):
    """At E + 300 the wall clock has passed E but the chain's median time has not: the refund is
    refused as non-final, and accepted blocks later (a bitcoinj bug: it tried once)."""
    pair, txid = abandoned_channel(version)
    record = result_of(pair.client_store.client_channel(txid))
    refunds = pair.client_manager
    result_of(refunds.start())
    # Blocks came regularly until now; then jump to just past E + 300 and mine one block.
    pair.clock.advance(record.expiry + 300 - pair.clock.seconds())
    pair.chain.mine(1)
    pair.clock.advance(0)
    from bitcoin.core import CTransaction

    refund_txid = CTransaction.deserialize(record.refund).GetTxid()
    assert result_of(pair.chain.tx_status(refund_txid)).state is TxState.UNKNOWN
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.EXPIRING
    for _ in range(12):
        pair.clock.advance(600)
        pair.chain.mine(1)
        pair.clock.advance(0)
    assert result_of(pair.chain.tx_status(refund_txid)).state in (TxState.MEMPOOL, TxState.CONFIRMED)


def test_settlement_on_chain_is_recorded_not_refunded(version):
    pair, txid = abandoned_channel(version)
    refunds = pair.client_manager
    result_of(refunds.start())
    settlement = result_of(pair.channels.settle(txid))
    pair.clock.advance(0)
    got = result_of(pair.client_store.client_channel(txid))
    assert got.state is ClientChannelState.SETTLED and got.close_tx == settlement


def test_a_spend_that_does_not_pay_our_change_is_flagged(version):
    """Learning the outcome from the chain, the client checks that the settlement pays its
    change; a spend of the contract that does not is recorded with a note saying so."""
    from bitcoin.core import COutPoint, CMutableTransaction, CMutableTxIn, CMutableTxOut, CScript

    from twisted_paychan.chain.types import OutPoint, SpendEvent, TxStatus
    from twisted_paychan.channel.validation import settlement_pays_change

    pair, txid = abandoned_channel(version)
    record = result_of(pair.client_store.client_channel(txid))
    short = CMutableTransaction([CMutableTxIn(COutPoint(txid, 0))],
                                [CMutableTxOut(record.client_change - 1, CScript(b"\x51"))]).serialize()
    assert not settlement_pays_change(short, record.client_key, record.client_change)
    refunds = pair.client_manager
    event = SpendEvent(OutPoint(txid, 0), b"\x55" * 32, short, TxStatus(TxState.CONFIRMED, 1))
    refunds._contract_spent(txid, event)  # what the contract output's watch delivers
    got = result_of(pair.client_store.client_channel(txid))
    assert got.state is ClientChannelState.SETTLED and "does not pay our change" in got.note
