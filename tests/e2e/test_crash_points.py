"""The server dies (SIGKILL, from a crash point) at each step of opening, paying and settling,
and is restarted on the same data directory. Afterwards: every payment the client saw
acknowledged is stored by the server, the client's money is either in a channel the server
knows or refundable by the client alone (Bitcoin Core's interpreter checks the refund), and the
final settlement is mined on the embedded chain."""

import hashlib

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import defer

from procs import RemoteClient, ServerProcess, server_channels
from twisted_paychan.bitcoin import consensus
from twisted_paychan.channel.errors import ChannelClosed
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.client_channel import SettledOnChain

SERVER_ID = hashlib.sha256(b"crash-points").digest()
POINTS = ["contract-broadcast", "channel-stored", "payment-stored", "settlement-stored", "settlement-broadcast"]


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
@pytest.mark.parametrize("point", POINTS)
@pytest_twisted.ensureDeferred
async def test_server_crash_at_each_step(tmp_path, point, version):
    env = {"PAYCHAN_CRASH_AT": point, "PAYCHAN_CRASH_AFTER": "6" if point == "payment-stored" else "1"}
    server = ServerProcess(tmp_path / "server", env=env)
    await server.start()
    client = RemoteClient(tmp_path, server)
    selector = VersionSelector.VERSION_1 if version == 1 else VersionSelector.VERSION_2
    settings = ClientSettings(channel_value=1_000_000, versions=selector, fee_rate=1000)
    acked: dict[bytes, int] = {}
    pending_settlement = None
    try:
        await client.open(fund_blocks=2)
        try:
            conn = await client.connect(settings, SERVER_ID)
            acked[conn.contract_txid] = 1000
            for _ in range(10):
                acked[conn.contract_txid] += (await conn.pay(1000)).amount
            pending_settlement = conn.settle()
            await conn.channel.closed  # CLOSE{settlement}, or EOF if the server died first
        except ChannelClosed:
            pass
        assert await server.crashed(), "the crash point was never reached"

        server.env = {}
        await server.start()
        if pending_settlement is not None and not pending_settlement.called:
            # EOF after our CLOSE: the settlement is learned from the chain once the
            # restarted server has put it back, and a block confirms it.
            await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
            outcome = await pending_settlement
            assert isinstance(outcome, SettledOnChain)
        else:
            conn = await client.connect(settings, SERVER_ID)
            acked.setdefault(conn.contract_txid, 1000 if not conn.resumed else 0)
            for _ in range(3):
                acked[conn.contract_txid] += (await conn.pay(1000)).amount
            await conn.settle()
        await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
        await server.stop()

        stored = {r.contract_txid: r for r in await server_channels(server.data_dir)}
        for txid, amount in acked.items():
            client_record = await client.store.client_channel(txid)
            if txid in stored:
                assert stored[txid].best_value >= amount, "an acknowledged payment was lost"
            else:
                # Never stored by the server (it died between broadcast and store): the client
                # can take everything back with the refund it stored before sending the contract.
                assert point == "contract-broadcast"
                contract = CTransaction.deserialize(client_record.contract)
                assert consensus.verify_input(client_record.refund, 0, bytes(contract.vout[0].scriptPubKey),
                                              contract.vout[0].nValue)
        settled = [r for r in stored.values() if r.settlement_tx is not None]
        assert settled, "nothing was settled"
    finally:
        await client.close()
        await server.stop()
