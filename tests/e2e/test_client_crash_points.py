"""The client (``paychan pay``) dies (SIGKILL, from a crash point) at each step of opening and
paying, and is run again: it never loses the channel's value. Its money is either in a
channel the server knows and settles, or refundable by the client alone (its stored refund is
judged by Bitcoin Core's interpreter), or back in its wallet."""

import json
import os
import subprocess
import sys

import pytest
import pytest_twisted
from bitcoin.core import CTransaction
from twisted.internet import threads

from procs import REPO, ServerProcess, server_channels
from twisted_paychan.bitcoin import consensus
from twisted_paychan.chain.types import from_display_hex
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.store.sqlite import open_store

VALUE = 1_000_000


def cli(argv, env=None):
    return subprocess.run([sys.executable, "-m", "twisted_paychan.cli", *argv], cwd=str(REPO), capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.mark.parametrize("point,after", [("client-contract-funded", "1"), ("client-channel-stored", "1"),
                                         ("client-change-stored", "5")])
@pytest_twisted.ensureDeferred
async def test_client_crash_at_each_step(tmp_path, point, after):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    client_dir = str(tmp_path / "client")
    chain = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    pay = ["pay", "--server", server.endpoint, *chain, "--data-dir", client_dir, "--value", str(VALUE),
           "--amount", "1000"]
    try:
        def scenario() -> dict:
            address = cli(["wallet", "--data-dir", client_dir, *chain, "--create", "new-address"]).stdout.strip()
            for _ in range(2):  # two coins: a contract that never left keeps one reserved
                assert cli(["regtest-fund", *chain, address, "3000000"]).returncode == 0
            crashed = cli([*pay, "--count", "10"], env={"PAYCHAN_CRASH_AT": point, "PAYCHAN_CRASH_AFTER": after})
            assert crashed.returncode == -9, crashed.stderr
            again = cli([*pay, "--count", "3", "--settle", "--json"])
            assert again.returncode == 0, again.stdout + again.stderr
            assert cli(["regtest-mine", *chain, "1"]).returncode == 0
            if point == "client-contract-funded":
                # Funded, never stored nor sent: its coins go back to the wallet.
                assert "released the coins of contract" in again.stderr
            return json.loads(again.stdout)

        result = await threads.deferToThread(scenario)
        await server.stop()
        server_records = {r.contract_txid: r for r in await server_channels(server.data_dir)}
        store = open_store(client_dir)
        try:
            client_records = await store.client_channels()
        finally:
            await store.close()
        final = from_display_hex(result["contract_txid"])
        assert server_records[final].best_value == result["channel_paid"]
        assert server_records[final].settlement_tx is not None
        for record in client_records:
            if record.contract_txid in server_records:
                continue
            # The server never saw this contract (the client died before sending it): the
            # client can take everything back alone.
            assert point == "client-channel-stored" and record.state is ClientChannelState.OPEN
            contract = CTransaction.deserialize(record.contract)
            assert consensus.verify_input(record.refund, 0, bytes(contract.vout[0].scriptPubKey),
                                          contract.vout[0].nValue)
        if point == "client-change-stored":
            assert result["resumed"] is True
    finally:
        await server.stop()
