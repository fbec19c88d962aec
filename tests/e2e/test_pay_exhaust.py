"""Issue #20: ``paychan pay`` paying a channel down to zero, as a user runs it (real processes):
against a server that, like stock bitcoinj, broadcasts its settlement and loses the exhausting
payment's PAYMENT_ACK and its CLOSE (§7.3 step 4, §1.4), and against our own server (PAYMENT_ACK,
then CLOSE with the settlement). Either way ``pay`` exits 0, the exhausting payment counts as
paid, the record ends SETTLED with the settlement's txid, the settlement is mined on the embedded
chain (Bitcoin Core's interpreter checks it), and the wallet holds nothing reserved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint

from procs import REPO, ServerProcess

sys.path.insert(0, str(Path(__file__).parents[1] / "net"))
from bitcoinj_style import BitcoinjExhaustingServerFactory  # noqa: E402

from twisted_paychan.chain.rpc.chain import RpcChain  # noqa: E402
from twisted_paychan.chain.types import TxState  # noqa: E402
from twisted_paychan.channel.records import ClientChannelState  # noqa: E402
from twisted_paychan.channel.settings import ServerSettings  # noqa: E402
from twisted_paychan.store.sqlite import SqliteChannelStore, open_store  # noqa: E402
from twisted_paychan.wallet.sqlite import SqliteWallet  # noqa: E402

FUNDS = 3_000_000


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "twisted_paychan.cli", *argv]


@pytest.mark.parametrize("server_kind, settled_from", [("bitcoinj", "chain"), ("ours", "server")])
@pytest_twisted.ensureDeferred
async def test_pay_channel_down_to_zero(tmp_path, server_kind, settled_from):
    server = ServerProcess(tmp_path / "server")
    await server.start()
    chain = RpcChain.from_url(reactor, server.rpc_url, cookie_path=server.cookie, poll_interval=0.2)
    await chain.start()
    port = None
    double_store = double_wallet = None
    client_dir = str(tmp_path / "client")
    rpc = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        endpoint = server.endpoint
        if server_kind == "bitcoinj":
            # The double runs in this process on the server's embedded chain (over RPC).
            double_wallet = SqliteWallet.open(tmp_path / "double-wallet.sqlite", chain)
            double_store = SqliteChannelStore(str(tmp_path / "double-channels.sqlite"), reactor)
            factory = BitcoinjExhaustingServerFactory(double_wallet, chain, double_store,
                                                      ServerSettings(fee_rate=1000), reactor)
            port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
            endpoint = f"tcp:127.0.0.1:{port.getHost().port}"

        def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
            return subprocess.run(cli(*argv), cwd=str(REPO), env=env, capture_output=True, text=True,
                                  timeout=180, check=check)

        def scenario() -> tuple[subprocess.CompletedProcess, str]:
            address = run("wallet", "--data-dir", client_dir, *rpc, "new-address").stdout.strip()
            run("regtest-fund", *rpc, address, str(FUNDS))
            # The server's 1000 sat opening payment and 5 x 19800: the fifth leaves no change.
            paid = run("pay", "--server", endpoint, *rpc, "--data-dir", client_dir, "--json",
                       "--value", "100000", "--amount", "19800", "--count", "5", "--settle", check=False)
            miner = run("wallet", "--data-dir", client_dir, *rpc, "new-address").stdout.strip()
            return paid, miner

        paid, miner = await threads.deferToThread(scenario)
        assert paid.returncode == 0, paid.stderr
        assert "channel exhausted: 100000 sat paid; waiting for the server's settlement" in paid.stderr
        result = json.loads(paid.stdout)
        assert result["paid"] == 5 * 19_800 and result["channel_paid"] == 100_000
        assert result["exhausted"] is True and result["state"] == "settled"
        assert result["settlement_from"] == settled_from
        settlement_txid = bytes.fromhex(result["settlement_txid"])[::-1]

        # The settlement is mined: the embedded node checked it with Bitcoin Core's interpreter.
        await chain.connection.call("generatetoaddress", 1, miner)
        status = await chain.tx_status(settlement_txid)
        assert status.state is TxState.CONFIRMED

        store = open_store(client_dir)
        try:
            [record] = await store.client_channels()
        finally:
            await store.close()
        assert record.state is ClientChannelState.SETTLED and record.close_tx is not None
        from twisted_paychan.bitcoin.txid import txid

        assert txid(record.close_tx) == settlement_txid
        assert record.value - record.client_change == 100_000 and record.note == ""

        def balance() -> dict:
            return json.loads(run("wallet", "--data-dir", client_dir, *rpc, "--json", "balance").stdout)

        contract_fee = record.refund_fees - 1000
        assert (await threads.deferToThread(balance))["total"] == FUNDS - 100_000 - contract_fee
        wallet = SqliteWallet.open(Path(client_dir) / "wallet.sqlite", chain)
        try:
            await wallet.balance()  # a refresh from the chain
            assert wallet.reserved_transactions() == []
        finally:
            wallet.close()
    finally:
        if port is not None:
            await port.stopListening()
        if double_store is not None:
            await double_store.close()
        if double_wallet is not None:
            double_wallet.close()
        await chain.stop()
        await server.stop()
