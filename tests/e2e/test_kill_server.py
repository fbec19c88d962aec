"""SIGKILL the server in the middle of a stream of payments, restart it on the same data
directory: every payment it acknowledged is in its store, the client resumes the channel, and
the settlement it finally broadcasts is accepted and mined by the embedded chain (Bitcoin
Core's consensus code)."""

import hashlib
import random

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from procs import RemoteClient, ServerProcess, server_channels
from twisted_paychan.channel.errors import ChannelClosed
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.channel.records import ServerChannelState

SERVER_ID = hashlib.sha256(b"kill-test").digest()


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
@pytest_twisted.ensureDeferred
async def test_server_killed_mid_stream_loses_no_acknowledged_payment(tmp_path, version):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open()
        selector = VersionSelector.VERSION_1 if version == 1 else VersionSelector.VERSION_2
        settings = ClientSettings(channel_value=2_000_000, versions=selector, fee_rate=1000)
        conn = await client.connect(settings, SERVER_ID)
        txid = conn.contract_txid
        acked = 1000  # the initial payment
        kill_after = random.Random(version).randint(20, 60)
        for i in range(200):
            if i == kill_after:
                reactor.callLater(0, server.kill)  # lands while this payment is in flight
            try:
                acked += (await conn.pay(1000)).amount
            except ChannelClosed:
                break
        else:
            pytest.fail("the server was never killed")

        # Restart on the same directory; the channel is resumed where the server left it.
        await server.start()
        conn = await client.connect(settings, SERVER_ID)
        assert conn.resumed and conn.contract_txid == txid
        for _ in range(5):
            acked += (await conn.pay(1000)).amount
        settlement = await conn.settle()
        assert isinstance(settlement, bytes)
        await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
        await server.stop()

        (record,) = await server_channels(server.data_dir)
        # Every acknowledged payment is stored; at most the one in flight at the kill was
        # stored without its ack reaching us (and the client counted it as spent, §9.3).
        assert acked <= record.best_value <= acked + 1000
        assert record.state in (ServerChannelState.SETTLING, ServerChannelState.SETTLED)
        assert record.settlement_tx == settlement
    finally:
        await client.close()
        await server.stop()
