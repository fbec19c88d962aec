"""Issue #20: ``paychan pay`` paying a channel down to zero, as a user runs it (real processes):
against a server that, like stock bitcoinj, broadcasts its settlement and loses the exhausting
payment's PAYMENT_ACK and its CLOSE (§7.3 step 4, §1.4), and against our own server (PAYMENT_ACK,
then CLOSE with the settlement). Either way ``pay`` exits 0, the exhausting payment counts as
paid, the record ends SETTLED with the settlement's txid, the settlement is mined on the embedded
chain (Bitcoin Core's interpreter checks it), and the wallet holds nothing reserved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint

from procs import REPO, ServerProcess

sys.path.insert(0, str(Path(__file__).parents[1] / "net"))
from bitcoinj_style import BitcoinjExhaustingServerFactory  # noqa: E402

from twisted_paychan.chain.rpc.chain import RpcChain  # noqa: E402
from twisted_paychan.chain.types import TxState  # noqa: E402
from twisted_paychan.channel.client_lifecycle import EXHAUSTED_NOTE  # noqa: E402
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
            address = run("wallet", "--data-dir", client_dir, *rpc, "--create", "new-address").stdout.strip()
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


class HoldsSettlements:
    """The double's chain: broadcasts pass, except a spend of a transaction broadcast before
    (the server's settlement of its contract), which is kept until the test lets it out."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain
        self._seen: set[bytes] = set()
        self.held: list[bytes] = []

    def broadcast(self, tx: bytes) -> Any:
        from twisted.internet import defer

        from twisted_paychan.bitcoin.transactions import parse_transaction
        from twisted_paychan.bitcoin.txid import txid

        if any(bytes(i.prevout.hash) in self._seen for i in parse_transaction(tx).vin):
            self.held.append(tx)
            return defer.succeed(None)
        self._seen.add(txid(tx))
        return self._chain.broadcast(tx)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)


@pytest_twisted.ensureDeferred
async def test_settlement_late_pay_exits_0_and_watch_finishes(tmp_path):
    """The settlement has not appeared within --settlement-wait: ``pay`` still exits 0, the
    record stays open and says the channel is exhausted and awaiting the server's settlement;
    once the settlement appears, ``paychan watch`` ends the channel settled with its txid."""
    server = ServerProcess(tmp_path / "server")
    await server.start()
    chain = RpcChain.from_url(reactor, server.rpc_url, cookie_path=server.cookie, poll_interval=0.2)
    await chain.start()
    held = HoldsSettlements(chain)
    double_wallet = SqliteWallet.open(tmp_path / "double-wallet.sqlite", chain)
    double_store = SqliteChannelStore(str(tmp_path / "double-channels.sqlite"), reactor)
    factory = BitcoinjExhaustingServerFactory(double_wallet, held, double_store, ServerSettings(fee_rate=1000),
                                              reactor)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    endpoint = f"tcp:127.0.0.1:{port.getHost().port}"
    client_dir = str(tmp_path / "client")
    rpc = ["--chain", server.rpc_url, "--rpc-cookie", str(server.cookie)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cli(*argv), cwd=str(REPO), env=env, capture_output=True, text=True,
                              timeout=180, check=check)

    try:
        def pay() -> subprocess.CompletedProcess:
            address = run("wallet", "--data-dir", client_dir, *rpc, "--create", "new-address").stdout.strip()
            run("regtest-fund", *rpc, address, str(FUNDS))
            return run("pay", "--server", endpoint, *rpc, "--data-dir", client_dir, "--settlement-wait", "1",
                       "--value", "100000", "--amount", "19800", "--count", "5", check=False)

        paid = await threads.deferToThread(pay)
        assert paid.returncode == 0, paid.stderr
        assert "channel exhausted: 100000 sat paid; waiting for the server's settlement" in paid.stderr
        assert "has not appeared within 1 s; paychan watch finishes the channel" in paid.stdout
        store = open_store(client_dir)
        try:
            [record] = await store.client_channels()
        finally:
            await store.close()
        assert record.state is ClientChannelState.OPEN and record.note == EXHAUSTED_NOTE
        assert record.client_change == 0

        [settlement] = held.held
        await chain.broadcast(settlement)
        from twisted_paychan.bitcoin.txid import txid

        def watch() -> str:
            proc = subprocess.Popen(cli("watch", "--data-dir", client_dir, *rpc), cwd=str(REPO), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            stuck = threading.Timer(120, proc.kill)  # a watch that never says it: fail, not hang
            stuck.start()
            try:
                # "watching ...", what it waits for on the open channel, then the settlement.
                lines = [proc.stderr.readline() for _ in range(3)]
            finally:
                stuck.cancel()
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
            return "".join(lines)

        said = await threads.deferToThread(watch)
        assert f"settled by {txid(settlement)[::-1].hex()}" in said
        assert "open; waiting for its settlement, or until " in said
        store = open_store(client_dir)
        try:
            [record] = await store.client_channels()
        finally:
            await store.close()
        assert record.state is ClientChannelState.SETTLED and record.close_tx == settlement and record.note == ""
        miner = (await threads.deferToThread(run, "wallet", "--data-dir", client_dir, *rpc, "new-address")).stdout
        await chain.connection.call("generatetoaddress", 1, miner.strip())
        assert (await chain.tx_status(txid(settlement))).state is TxState.CONFIRMED
    finally:
        await port.stopListening()
        await double_store.close()
        double_wallet.close()
        await chain.stop()
        await server.stop()
