"""Every example in examples/ runs, as a user would run it, and moves real money on the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from bitcoin.core import CTransaction

from procs import REPO, RemoteClient, ServerProcess, server_channels
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.settings import ClientSettings

EXAMPLES = REPO / "examples"


def test_metered_service() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "metered_service.py"), "--requests", "4"],
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:5] == [f"'REQUEST NUMBER {i}' (receipt for r{i + 1})" for i in range(4)]
    summary = json.loads(lines[-1])
    # The initial payment (1000) and one price (1000) per request; the client gets the rest back.
    assert summary["server_value"] == 1000 + 4 * 1000
    assert summary["client_change"] == 100_000 - summary["server_value"]
    assert summary["settlement_confirmed"] is True
    # The server's wallet holds the settlement's payout: its value less the fee (a few hundred sat).
    assert summary["server_wallet"] == summary["server_payout"]
    assert summary["server_value"] - 1000 < summary["server_payout"] < summary["server_value"]


@pytest_twisted.ensureDeferred
async def test_twistd_with_a_handler_plugin_of_ones_own(tmp_path: Path) -> None:
    """examples/twistd_handler: a plugin outside this package, found on PYTHONPATH."""
    ledger = tmp_path / "ledger.jsonl"
    pythonpath = f"{REPO}{os.pathsep}{EXAMPLES / 'twistd_handler'}"
    server = ServerProcess(tmp_path / "server", "--handler", f"ledger:{ledger}", env={"PYTHONPATH": pythonpath})
    await server.start()
    client = RemoteClient(tmp_path, server)
    try:
        await client.open()
        conn = await client.connect(ClientSettings(channel_value=200_000, fee_rate=1000), b"L" * 32)
        receipts = [(await conn.pay(amount, f"order {i}".encode())).info for i, amount in enumerate((1500, 2500))]
        # The ledger's first line is the initial payment (its answer goes nowhere: CHANNEL_OPEN).
        assert receipts == [b"ledger entry 2", b"ledger entry 3"]
        settlement = await conn.settle()
        await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
        tx = CTransaction.deserialize(settlement)
        assert (await client.chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
        assert tx.vout[0].nValue == 200_000 - 5000
    finally:
        await client.close()
        await server.stop()
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(e["increase"], e["total"], e["info"]) for e in entries] == [
        (1000, 1000, None), (1500, 2500, "order 0"), (2500, 5000, "order 1")]
    [record] = await server_channels(server.data_dir)
    assert record.best_value == 5000 and record.settlement_tx == settlement


def test_help_handlers_lists_the_plugin() -> None:
    done = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "paychan",
                           "--help-handlers"], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{EXAMPLES / 'twistd_handler'}"})
    assert done.returncode == 0, done.stderr
    assert any(line.split()[:1] == ["ledger:PATH"] for line in done.stdout.splitlines())


def test_the_metered_server_answers_a_request_only_after_its_payment_is_acknowledged() -> None:
    """In memory (iosim, a MemoryChain, a Clock): a request with no payment gets no answer; once
    paid, its answer follows the PAYMENT_ACK on the wire."""
    import importlib.util

    from twisted.internet import defer, task
    from twisted.test import iosim

    from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
    from twisted_paychan.chain.memory import MemoryChain
    from twisted_paychan.channel.settings import ServerSettings
    from twisted_paychan.net.client_manager import ClientChannelManager
    from twisted_paychan.net.server_manager import ServerChannelManager
    from twisted_paychan.store.memory import MemoryChannelStore
    from twisted_paychan.wallet.memory import MemoryWallet
    from twisted_paychan.wire.messages import MT, decode_message

    spec = importlib.util.spec_from_file_location("metered_service", EXAMPLES / "metered_service.py")
    assert spec is not None and spec.loader is not None
    ex: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)

    clock = task.Clock()
    clock.advance(1_700_000_000)
    chain = MemoryChain(clock)
    server_wallet, client_wallet = MemoryWallet(chain), MemoryWallet(chain)
    chain.credit(address_to_script(client_wallet.new_address().result, REGTEST), 10_000_000)
    chain.mine(1)
    server = ServerChannelManager(server_wallet, chain, MemoryChannelStore(), ServerSettings(), clock)
    client = ClientChannelManager(client_wallet, chain, MemoryChannelStore(), clock)
    signer = client_wallet.new_channel_key().result
    s = ex.MeteredServerProtocol(server)
    c = ex.MeteredClientProtocol(client, ClientSettings(channel_value=100_000, fee_rate=1000), signer)
    written: list[bytes] = []  # what the server wrote, in order: A, or C + the message type
    send_frame = s.send_frame

    def recording(tag: bytes, body: bytes) -> None:
        written.append(tag + bytes([decode_message(body).type]) if tag == ex.CHANNEL else tag)
        send_frame(tag, body)

    s.send_frame = recording
    pump = iosim.connect(s, iosim.makeFakeServer(s), c, iosim.makeFakeClient(c))
    pump.flush()
    assert c.channel.opened.called

    c.send_frame(ex.REQUEST, json.dumps({"id": "free", "query": "for nothing"}).encode())
    pump.flush()
    assert s.requests == {"free": "for nothing"} and not [w for w in written if w[:1] == ex.ANSWER]

    answered = c.answers["free"] = defer.Deferred()
    paid = c.channel.pay(ex.PRICE, b"free")
    pump.flush()
    assert paid.called and answered.result == "FOR NOTHING"
    ack = written.index(ex.CHANNEL + bytes([MT.PAYMENT_ACK]))
    assert written[ack + 1:] == [ex.ANSWER]
