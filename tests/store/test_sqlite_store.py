"""SQLite-only properties: durability across reopen and SIGKILL, exclusive ownership, refusal
to move money backwards, and group commit."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from kill_writer import settle_at
from store_conformance import client_record, server_record
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState
from twisted_paychan.store.interfaces import StoreError
from twisted_paychan.store.sqlite import SqliteChannelStore, StoreLocked, open_store


def test_reopen_keeps_everything(tmp_path):
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path)
    s.add_server_channel(server_record(1))
    s.record_payment(server_record(1).contract_txid, 4242, b"sig")
    s.add_client_channel(client_record(2))
    s.record_client_change(client_record(2).contract_txid, 1000)
    s.close()
    s = SqliteChannelStore(path)
    got = []
    s.server_channel(server_record(1).contract_txid).addCallback(got.append)
    s.client_channel(client_record(2).contract_txid).addCallback(got.append)
    assert (got[0].best_value, got[0].best_signature) == (4242, b"sig")
    assert got[1].client_change == 1000
    s.close()


def test_transitions_survive_reopen(tmp_path):
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path)
    s.add_server_channel(server_record(1))
    s.record_payment(server_record(1).contract_txid, 4242, b"sig")
    s.transition_server(server_record(1).contract_txid, ServerChannelState.OPEN, ServerChannelState.SETTLING,
                        note="operator", settlement_tx=b"settlement", updated_at=1_800_000_000)
    s.add_client_channel(client_record(2))
    s.transition_client(client_record(2).contract_txid, ClientChannelState.OPEN, ClientChannelState.SETTLED,
                        close_tx=b"close", updated_at=1_800_000_000)
    s.close()
    s = SqliteChannelStore(path)
    got = []
    s.server_channel(server_record(1).contract_txid).addCallback(got.append)
    s.client_channel(client_record(2).contract_txid).addCallback(got.append)
    assert got[0] == server_record(1, best_value=4242, best_signature=b"sig", state=ServerChannelState.SETTLING,
                                   note="operator", settlement_tx=b"settlement", updated_at=1_800_000_000)
    assert got[1] == client_record(2, state=ClientChannelState.SETTLED, close_tx=b"close", updated_at=1_800_000_000)
    s.close()


def test_second_open_is_refused(tmp_path):
    s = open_store(str(tmp_path))
    with pytest.raises(StoreLocked):
        open_store(str(tmp_path))
    s.close()
    open_store(str(tmp_path)).close()


def test_money_never_moves_backwards(tmp_path):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"))
    s.add_server_channel(server_record(1))
    s.record_payment(server_record(1).contract_txid, 5000, b"a")
    errors = []
    s.record_payment(server_record(1).contract_txid, 4999, b"b").addErrback(errors.append)
    s.add_client_channel(client_record(1))
    s.record_client_change(client_record(1).contract_txid, 1000)
    s.record_client_change(client_record(1).contract_txid, 1001).addErrback(errors.append)
    assert [e.check(StoreError) for e in errors] == [StoreError, StoreError]
    s.close()


@pytest_twisted.ensureDeferred
async def test_group_commit_batches_concurrent_writes(tmp_path):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"), reactor)
    for n in range(1, 21):
        await s.add_server_channel(server_record(n))
    before = s.commits
    await defer.gatherResults(
        [s.record_payment(bytes([n]) * 32, b, b"s") for b in range(1, 11) for n in range(1, 21)]
    )
    # 200 writes issued at once: far fewer fsyncs than writes.
    assert s.commits - before < 50
    assert all(r.best_value == 10 for r in await s.server_channels())
    await s.close()


@pytest.mark.parametrize("channels, mode", [(1, ""), (8, ""), (1, "transitions"), (8, "transitions")])
def test_sigkill_loses_no_acknowledged_write(tmp_path, channels, mode):
    """Kill the writer at a random moment; every write it acknowledged is in the store: each
    payment, and (``transitions``) each state change, with the payments made before it."""
    path = str(tmp_path / "c.sqlite")
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "kill_writer.py"), path, str(channels), mode],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    acked: dict[int, int] = {}
    moved: dict[int, int] = {}

    def read(line: str) -> None:
        what, n, k = line.split()
        (acked if what == "ack" else moved)[int(n)] = int(k)

    stop_after = random.Random(channels).randint(100, 400)
    for i, line in enumerate(child.stdout):
        read(line)
        if i >= stop_after:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    # Lines already written by the child but not read yet are acknowledged too.
    for line in child.stdout.read().splitlines():
        read(line)
    s = SqliteChannelStore(path)
    stored = {}
    s.server_channels().addCallback(lambda rs: stored.update({r.contract_txid[0]: r for r in rs}))
    s.close()
    assert acked, "the child acknowledged nothing"
    for n, b in acked.items():
        assert stored[n].best_value >= b, f"channel {n}: acknowledged b={b}, stored {stored[n].best_value}"
    if mode == "transitions":
        assert moved, "the child made no transition"
        for n, k in moved.items():
            rec = stored[n]
            assert rec.updated_at >= k, f"channel {n}: transition {k} acknowledged, stored {rec.updated_at}"
            # The move stored is the one its count says, and carries every payment before it.
            assert rec.state is (ServerChannelState.SETTLING if rec.updated_at % 2 else ServerChannelState.STUCK)
            assert rec.note == f"move {rec.updated_at}"
            assert (rec.best_value, rec.best_signature) == (settle_at(n), b"sig%d" % settle_at(n))
