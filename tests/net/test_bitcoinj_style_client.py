"""Our server answers promptly a client that writes like bitcoinj (length and body as two
writes, Nagle on): the run below completes at full speed instead of stalling ~40 ms per
message on delayed ACKs. (Its speed is measured in bench/, not asserted here.)"""

import pytest_twisted

from bitcoinj_style import BitcoinjStyleProtocol
from tcp_setup import Loopback
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


@pytest_twisted.ensureDeferred
async def test_bitcoinj_style_client_pays(tmp_path):
    net = Loopback(tmp_path)
    await net.start()
    try:
        conn = await net.connect(ClientSettings(channel_value=500_000, versions=VersionSelector.VERSION_2, fee_rate=1000),
                                 protocol_class=BitcoinjStyleProtocol)
        for _ in range(20):
            await conn.pay(1000)
        assert (await net.server_store.server_channel(conn.contract_txid)).best_value == 21_000
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()
