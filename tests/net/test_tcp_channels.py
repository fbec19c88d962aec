"""Our client pays our server over real TCP on 127.0.0.1, on the embedded chain, both versions:
contracts and settlements are mined, and Bitcoin Core's consensus code accepts them."""

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import defer, reactor, task

from tcp_setup import Loopback
from twisted_paychan.bitcoin import consensus
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.net import client as client_module
from twisted_paychan.net.client_channel import SettledOnChain
from twisted_paychan.channel.records import ClientChannelState

SELECTORS = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


@pytest_twisted.ensureDeferred
async def test_open_pay_settle_over_tcp(tmp_path, version):
    net = Loopback(tmp_path)
    await net.start()
    try:
        settings = ClientSettings(channel_value=1_000_000, versions=SELECTORS[version], fee_rate=1000)
        conn = await net.connect(settings)
        assert not conn.resumed
        for i in range(5):
            ack = await conn.pay(1000, b"\xde\xad\xbe\xef" if i % 2 else None)
            assert ack.amount == 1000
        server_record = await net.server_store.server_channel(conn.contract_txid)
        assert server_record.best_value == 6000
        settlement = await conn.settle()
        assert isinstance(settlement, bytes)
        contract = CTransaction.deserialize(server_record.contract)
        assert consensus.verify_input(settlement, 0, bytes(contract.vout[0].scriptPubKey), contract.vout[0].nValue)
        net.chain.mine(1)
        assert (await net.chain.tx_status(conn.contract_txid)).state is TxState.CONFIRMED
        tx = CTransaction.deserialize(settlement)
        status = await net.chain.tx_status(tx.GetTxid())
        assert status.state is TxState.CONFIRMED
        assert tx.vout[0].nValue == 994_000
        client_record = await net.client_store.client_channel(conn.contract_txid)
        assert client_record.state is ClientChannelState.SETTLED
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_disconnect_and_resume_over_tcp(tmp_path, version):
    net = Loopback(tmp_path)
    await net.start()
    try:
        settings = ClientSettings(channel_value=500_000, versions=SELECTORS[version], fee_rate=1000)
        conn = await net.connect(settings)
        await conn.pay(2000)
        conn.disconnect()
        await conn.channel.closed
        again = await net.connect(settings)
        assert again.resumed and again.contract_txid == conn.contract_txid
        await again.pay(3000)
        record = await net.server_store.server_channel(conn.contract_txid)
        assert record.best_value == 6000
        again.disconnect()
        await again.channel.closed
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_v2_or_1_client_falls_back_to_v1_server(tmp_path):
    """A VERSION_2_ALLOW_1 client and our v1-only server: the server answers SERVER_VERSION{1}
    and the client goes on in v1 (§3.3 step 3). The reconnect for a server that drops the
    connection instead (recording c2) is in test_version_fallback_tcp.py."""
    net = Loopback(tmp_path, ServerSettings(fee_rate=1000, versions=frozenset({1})))
    await net.start()
    try:
        settings = ClientSettings(channel_value=300_000, versions=VersionSelector.VERSION_2_ALLOW_1, fee_rate=1000)
        conn = await net.connect(settings)
        assert conn.channel.machine.major == 1
        await conn.pay(1000)
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_v2_only_client_against_v1_server_fails(tmp_path):
    net = Loopback(tmp_path, ServerSettings(fee_rate=1000, versions=frozenset({1})))
    await net.start()
    try:
        settings = ClientSettings(channel_value=300_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        with pytest.raises(ChannelClosed) as e:
            await net.connect(settings)
        assert e.value.reason is CloseReason.NO_ACCEPTABLE_VERSION
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_a_resume_takes_a_live_connection_over_only_by_paying(tmp_path):
    """Issue #14 item 4 over TCP: the first connection stays open (to the server it looks alive,
    as a half-open one does); a second one resumes the channel, is told CHANNEL_OPEN, and takes
    it over with its first payment; the first is closed then, not at the resume."""
    net = Loopback(tmp_path)
    await net.start()
    try:
        settings = ClientSettings(channel_value=500_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        first = await net.connect(settings)
        await first.pay(2000)
        closed = []
        net.factory.manager.subscribe(lambda e: closed.append(e.contract_txid) if e.kind.value == "closed" else None)
        # A client process restarted after its connection went half-open has no memory of it.
        client_module._ACTIVE.discard(first.contract_txid)
        again = await net.connect(settings)
        assert again.resumed and again.contract_txid == first.contract_txid
        # The server decided before it sent CHANNEL_OPEN: no connection was closed for it.
        assert closed == []
        await again.pay(3000)
        await first.channel.closed
        assert closed == [first.contract_txid]
        record = await net.server_store.server_channel(first.contract_txid)
        assert record.best_value == 6000
        again.disconnect()
        await again.channel.closed
    finally:
        await net.stop()
