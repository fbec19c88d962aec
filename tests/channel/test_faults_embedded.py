"""Nobody loses money when a peer vanishes or both act at once near expiry (spec §10, §13):
on the embedded chain (Bitcoin Core's consensus engine), with time moved by the test.

The test clock starts three days before the real one: the kernel refuses blocks more than two
hours ahead of the machine's clock, and a channel's expiry must be passed by the chain's median
time past (BIP 113) for a refund to be final.
"""

import time

import pytest
from bitcoin.core import CTransaction

from channel_pair import Pair, result_of
from twisted_paychan.chain.types import TxState, display_hex
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState

SELECTORS = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


def opened(tmp_path, version, paid=30_000):
    pair = Pair(chain_dir=tmp_path / "chain", start=int(time.time()) - 3 * 86400)
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=SELECTORS[version], fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(paid - 1000)
    pair.pump()
    result_of(d)
    pair.mine(1)  # the contract confirms
    return pair, client, txid


def txid_of(raw):
    return CTransaction.deserialize(raw).GetTxid()


def test_server_vanishes_client_refund_confirms(tmp_path, version):
    pair, client, txid = opened(tmp_path, version)
    pair.channels.stop()  # the server is gone for good: no settlement ever
    client.disconnect()
    pair.pump()
    record = result_of(pair.client_store.client_channel(txid))
    refunds = pair.client_manager
    result_of(refunds.start())
    while pair.clock.seconds() < record.expiry + 4 * 3600:
        pair.mine(1)
    got = result_of(pair.client_store.client_channel(txid))
    assert got.state is ClientChannelState.REFUNDED
    status = result_of(pair.chain.tx_status(txid_of(record.refund)))
    assert status.state is TxState.CONFIRMED
    refund = CTransaction.deserialize(record.refund)
    assert refund.vout[0].nValue == 1_000_000 - 1000  # everything back but the fixed refund fee
    refunds.stop()
    pair.chain.close()


def test_client_vanishes_server_settlement_confirms(tmp_path, version):
    pair, client, txid = opened(tmp_path, version)
    client.disconnect()  # the client is gone for good
    pair.pump()
    record = result_of(pair.server_store.server_channel(txid))
    while pair.clock.seconds() < record.expiry - 7200 + 1200:
        pair.mine(1)
    pair.mine(1)
    got = result_of(pair.server_store.server_channel(txid))
    assert got.state is ServerChannelState.SETTLED
    settlement = CTransaction.deserialize(got.settlement_tx)
    assert settlement.vout[0].nValue == 1_000_000 - 30_000  # the client's change, in full
    assert result_of(pair.chain.tx_status(settlement.GetTxid())).state is TxState.CONFIRMED
    pair.channels.stop()
    pair.chain.close()


def test_both_act_near_expiry_exactly_one_confirms(tmp_path, version):
    """The server was down through its settle moment; it comes back after E just as the client
    broadcasts its refund. Exactly one of the two spends confirms and both sides record it."""
    pair, client, txid = opened(tmp_path, version)
    client.disconnect()
    pair.pump()
    pair.channels.stop()  # server down
    record = result_of(pair.client_store.client_channel(txid))
    refunds = pair.client_manager
    result_of(refunds.start())
    while pair.clock.seconds() < record.expiry + 3 * 3600:
        pair.mine(1)  # the refund becomes final and is broadcast on one of these blocks...
    # ... and the server restarts at that moment and tries to settle at once.
    restarted = ServerChannelManager(pair.server_wallet, pair.chain, pair.server_store, pair.server_settings, pair.clock)
    result_of(restarted.start())
    pair.clock.advance(0)
    for _ in range(3):
        pair.mine(1)
    refund_status = result_of(pair.chain.tx_status(txid_of(record.refund))).state
    server_record = result_of(pair.server_store.server_channel(txid))
    client_record = result_of(pair.client_store.client_channel(txid))
    # A REFUNDED server record names the transaction that spent the contract: the refund.
    refunded = server_record.state is ServerChannelState.REFUNDED
    settlement_status = (result_of(pair.chain.tx_status(txid_of(server_record.settlement_tx))).state
                         if server_record.settlement_tx and not refunded else TxState.UNKNOWN)
    assert [refund_status, settlement_status].count(TxState.CONFIRMED) == 1
    if refund_status is TxState.CONFIRMED:
        assert client_record.state is ClientChannelState.REFUNDED
        assert refunded and server_record.settlement_tx == record.refund
        assert server_record.note.startswith(f"the contract was spent by {display_hex(txid_of(record.refund))} "
                                             "(the client's refund)")
    else:
        assert client_record.state is ClientChannelState.SETTLED
        assert server_record.state is ServerChannelState.SETTLED
    refunds.stop()
    restarted.stop()
    pair.chain.close()
