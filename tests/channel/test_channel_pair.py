"""Our client pays our server, in memory, in both protocol versions: open, pay, settle; every
transaction checked by Bitcoin Core's interpreter and mined on the chain double."""

import pytest
from bitcoin.core import CTransaction

from channel_pair import Pair, failure_of, result_of
from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.errors import ChannelClosed, ChannelUsageError, CloseReason
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState

VERSIONS = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


def open_channel(pair, version, value=1_000_000):
    client = pair.connect(ClientSettings(channel_value=value, versions=VERSIONS[version], fee_rate=1000))
    opened = result_of(client.opened)
    assert not opened.resumed
    return client, opened.contract_txid


def test_open_pay_settle(version):
    pair = Pair()
    client, txid = open_channel(pair, version)
    record = result_of(pair.server_store.server_channel(txid))
    assert record.version == version and record.best_value == 1000  # the initial payment P
    # The contract was broadcast by the server and is in the mempool.
    assert result_of(pair.chain.tx_status(txid)).state is TxState.MEMPOOL
    acks = []
    for i in range(5):
        d = client.pay(1000, b"\xde\xad\xbe\xef" if i % 2 else None)
        pair.pump()
        acks.append(result_of(d))
    assert [a.amount for a in acks] == [1000] * 5
    assert result_of(pair.server_store.server_channel(txid)).best_value == 6000
    assert result_of(pair.client_store.client_channel(txid)).client_change == 994_000
    d = client.settle()
    pair.pump()
    settlement = result_of(d)
    assert pair.server_closed is CloseReason.CLIENT_REQUESTED_CLOSE
    assert pair.client_closed is CloseReason.CLIENT_REQUESTED_CLOSE
    # Bitcoin Core judges the settlement against the contract output it spends.
    contract = CTransaction.deserialize(record.contract)
    assert consensus.verify_input(settlement, 0, bytes(contract.vout[0].scriptPubKey), contract.vout[0].nValue)
    tx = CTransaction.deserialize(settlement)
    channel = ChannelScript(version, record.client_key, record.server_key, record.expiry)
    assert tx.vout[0].nValue == 994_000 and bytes(tx.vout[0].scriptPubKey) == channel.client_change_script
    fee = 1_000_000 - sum(o.nValue for o in tx.vout)
    assert tx.vout[1].nValue == 6000 - fee and fee <= len(settlement) + 2  # 1000 sat/kB
    pair.chain.mine(1)
    assert result_of(pair.chain.tx_status(txid)).state is TxState.CONFIRMED
    assert result_of(pair.chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.SETTLED
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLING


def test_refund_is_valid_before_the_contract_leaves(version):
    pair = Pair()
    client, txid = open_channel(pair, version)
    record = result_of(pair.client_store.client_channel(txid))
    contract = CTransaction.deserialize(record.contract)
    refund = CTransaction.deserialize(record.refund)
    assert refund.nLockTime == record.expiry and refund.vout[0].nValue == record.value - 1000
    assert consensus.verify_input(record.refund, 0, bytes(contract.vout[0].scriptPubKey), contract.vout[0].nValue)


def test_exhausting_payment_settles(version):
    pair = Pair()
    client, txid = open_channel(pair, version, value=100_000)
    for _ in range(4):
        d = client.pay(20_000)
        pair.pump()
        result_of(d)
    d = client.pay(19_000)  # leaves 0: the server settles at once (CHANNEL_EXHAUSTED)
    pair.pump()
    assert result_of(d).amount == 19_000
    assert pair.server_closed is CloseReason.CHANNEL_EXHAUSTED
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.SETTLED


def test_resume_after_disconnect(version):
    pair = Pair()
    settings = ClientSettings(channel_value=1_000_000, versions=VERSIONS[version], fee_rate=1000)
    client, txid = open_channel(pair, version)
    d = client.pay(5000)
    pair.pump()
    result_of(d)
    client.disconnect()
    pair.pump()
    record = result_of(pair.client_store.client_channel(txid))
    client = pair.connect(settings, resume=record)
    opened = result_of(client.opened)
    assert opened.resumed and opened.contract_txid == txid
    d = client.pay(1000)
    pair.pump()
    result_of(d)
    assert result_of(pair.server_store.server_channel(txid)).best_value == 7000


def test_pay_before_open_and_twice_in_flight_are_usage_errors(version):
    pair = Pair()
    client, _ = open_channel(pair, version)
    client.pay(1000)
    with pytest.raises(ChannelUsageError):
        client.pay(1000)
    pair.pump()


def test_handler_failure_fails_the_payment(version):
    from twisted.internet import defer

    class Refusing:
        def channel_opened(self, txid):
            pass

        def payment_received(self, txid, increase, total, info):
            if total > 1000:
                return defer.fail(RuntimeError("no thanks"))

        def channel_closed(self, reason):
            pass

    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VERSIONS[version], fee_rate=1000),
                          handler=Refusing())
    result_of(client.opened)
    d = client.pay(1000)
    pair.pump()
    f = failure_of(d)
    assert f.check(ChannelClosed) and f.value.reason is CloseReason.REMOTE_SENT_ERROR
    assert pair.server_closed is CloseReason.UPDATE_PAYMENT_FAILED
