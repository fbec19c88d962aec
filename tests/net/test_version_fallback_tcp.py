"""Version fallback over loopback TCP on the embedded chain (issue #15, spec §3): our server,
run as ``twistd paychan --versions 1``, offers major 1 to a client asking for 2, and a
bitcoinj-style 2-or-1 client goes on in v1 on that one connection; our client still reconnects
once for servers that drop the connection instead (stock bitcoinj v1-only), and for a stored v2
channel the server can no longer resume."""

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from bitcoinj_style import BitcoinjStyleProtocol, BitcoinjV1OnlyServerFactory
from tcp_setup import Loopback
from twisted_paychan.bitcoin import consensus
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.net.server import PaymentChannelServerFactory
from twisted_paychan.tap import Options

TWO_OR_ONE = VersionSelector.VERSION_2_ALLOW_1


def versions_1_settings() -> ServerSettings:
    """The server settings ``twistd paychan --versions 1`` runs with."""
    options = Options()
    options.parseOptions(["--versions", "1"])
    settings = options["settings"]
    assert settings.versions == frozenset({1})
    return settings


def count_connections(factory):
    """The addresses of the connections ``factory`` accepts, as it accepts them."""
    accepted = []
    build = factory.buildProtocol

    def counting(addr):
        accepted.append(addr)
        return build(addr)

    factory.buildProtocol = counting
    return accepted


async def pay_and_settle(net, conn, version):
    """Five payments, then settlement: Bitcoin Core's interpreter accepts the settlement, and
    it confirms on the embedded chain."""
    for _ in range(5):
        assert (await conn.pay(1000)).amount == 1000
    record = await net.server_store.server_channel(conn.contract_txid)
    assert record.version == version and record.best_value == 6000
    settlement = await conn.settle()
    contract = CTransaction.deserialize(record.contract)
    assert consensus.verify_input(settlement, 0, bytes(contract.vout[0].scriptPubKey), contract.vout[0].nValue)
    net.chain.mine(1)
    assert (await net.chain.tx_status(conn.contract_txid)).state is TxState.CONFIRMED
    assert (await net.chain.tx_status(CTransaction.deserialize(settlement).GetTxid())).state is TxState.CONFIRMED
    assert (await net.client_store.client_channel(conn.contract_txid)).state is ClientChannelState.SETTLED


@pytest_twisted.ensureDeferred
async def test_bitcoinj_style_2_or_1_client_with_a_versions_1_server(tmp_path):
    """Issue #15's report, fixed: bitcoinj's default client against ``--versions 1`` opens, pays
    and settles in v1, on one connection."""
    net = Loopback(tmp_path, versions_1_settings())
    accepted = count_connections(net.factory)
    await net.start()
    try:
        settings = ClientSettings(channel_value=1_000_000, versions=TWO_OR_ONE, fee_rate=1000)
        conn = await net.connect(settings, protocol_class=BitcoinjStyleProtocol)
        assert conn.channel.machine.major == 1 and not conn.resumed
        await pay_and_settle(net, conn, 1)
        assert len(accepted) == 1  # no reconnect
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_v2_only_client_with_a_versions_1_server_is_refused(tmp_path):
    net = Loopback(tmp_path, versions_1_settings())
    accepted = count_connections(net.factory)
    await net.start()
    try:
        settings = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)
        with pytest.raises(ChannelClosed) as e:
            await net.connect(settings)
        assert e.value.reason is CloseReason.NO_ACCEPTABLE_VERSION
        assert len(accepted) == 1
        assert await net.server_store.server_channels() == []
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_2_or_1_client_reconnects_once_to_a_server_that_drops_it(tmp_path):
    """A stock bitcoinj v1-only server never offers a lower major: it drops the connection after
    a version-2 CLIENT_VERSION (recording c2). Our 2-or-1 client reconnects once asking for 1."""
    net = Loopback(tmp_path, ServerSettings(fee_rate=1000))
    net.factory = BitcoinjV1OnlyServerFactory(net.server_wallet, net.chain, net.server_store, net.server_settings,
                                              reactor)
    accepted = count_connections(net.factory)
    await net.start()
    try:
        conn = await net.connect(ClientSettings(channel_value=1_000_000, versions=TWO_OR_ONE, fee_rate=1000))
        assert conn.channel.machine.major == 1 and len(accepted) == 2
        await pay_and_settle(net, conn, 1)
    finally:
        await net.stop()


@pytest_twisted.ensureDeferred
async def test_stored_v2_channel_after_the_server_drops_v2(tmp_path):
    """A 2-or-1 client with a stored v2 channel, and its server restarted with ``--versions 1``:
    the server answers 1 and would not resume the v2 channel in v1, nor does our client offer it
    in v1 (§9.1 item 6); the client refuses and reconnects once asking for 1, and opens a new v1
    channel. The v2 channel stays stored and open on both sides."""
    net = Loopback(tmp_path)
    await net.start()
    try:
        settings = ClientSettings(channel_value=500_000, versions=TWO_OR_ONE, fee_rate=1000)
        old = await net.connect(settings)
        assert old.channel.machine.major == 2
        await old.pay(2000)
        old.disconnect()
        await old.channel.closed
        await net.port.stopListening()
        net.factory = PaymentChannelServerFactory(net.server_wallet, net.chain, net.server_store,
                                                  versions_1_settings(), reactor)
        accepted = count_connections(net.factory)
        net.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(net.factory)
        conn = await net.connect(settings)
        assert len(accepted) == 2
        assert conn.channel.machine.major == 1 and not conn.resumed and conn.contract_txid != old.contract_txid
        assert (await net.client_store.client_channel(old.contract_txid)).state is ClientChannelState.OPEN
        old_server = await net.server_store.server_channel(old.contract_txid)
        assert old_server.state is ServerChannelState.OPEN and old_server.version == 2
        assert old_server.best_value == 3000
        await pay_and_settle(net, conn, 1)
    finally:
        await net.stop()
