"""Two ``twistd paychan`` processes on one PostgreSQL (the session's real server) and one chain (a
standalone ``paychan regtest`` node both servers reach over RPC), given the same wallet words:

- a node dies mid-stream, the client resumes on the other and pays on, and the settlement pays
  the server every payment the client counted as made;
- the same channel resumed on both nodes at once: exactly one connection keeps it, and no
  payment is acknowledged on both (the store and both clients' records agree);
- the node holding a channel's expiry duty dies (SIGKILL, at the crash point between storing its
  settlement and broadcasting it): the other node takes the duty over within ``--duty-takeover``
  and broadcasts the stored settlement, which confirms once, long before expiry;
- the database stops and starts under both nodes while clients pay: the payments in flight
  fail, nothing acknowledged is lost, and both servers go on once it is back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from procs import REPO, RemoteClient, ServerProcess, _listening, free_port  # noqa: E402
from twisted_paychan.bitcoin.addresses import REGTEST  # noqa: E402
from twisted_paychan.bitcoin.txid import txid as tx_id  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings  # noqa: E402
from twisted_paychan.net import client as client_module  # noqa: E402
from twisted_paychan.wallet.hd import Seed  # noqa: E402
from twisted_paychan.wallet.sqlite import SqliteWallet  # noqa: E402

SERVER_ID = hashlib.sha256(b"cluster").digest()
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
VALUE = 1_000_000


class Node:
    """A standalone regtest node (``paychan regtest``): the chain both servers share."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: Optional[subprocess.Popen[str]] = None
        self.url = ""
        self.cookie = ""

    async def start(self) -> None:
        argv = [sys.executable, "-m", "twisted_paychan.cli", "regtest", "--data-dir", str(self.tmp / "node"),
                "--rpc-listen", f"tcp:{free_port()}:interface=127.0.0.1", "--json", "--no-log"]
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        listening = json.loads(await threads.deferToThread(self.proc.stdout.readline))
        self.url, self.cookie = listening["url"], listening["cookie"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class ClusterServer(ServerProcess):
    """``twistd paychan`` on the shared node and the shared store, named ``node_id``."""

    def __init__(self, data_dir: Path, node: Node, store_url: str, node_id: str, words: str,
                 *extra: str, env: Optional[dict] = None) -> None:
        super().__init__(data_dir, "--chain", node.url, "--rpc-cookie", node.cookie, "--store", store_url,
                         "--node-id", node_id, "--duty-takeover", "3", *extra, env=env)
        self.node = node
        self.node_id = node_id
        data_dir.mkdir(mode=0o700)
        # The words every node is given (an operator runs `paychan wallet restore` on each).
        SqliteWallet.open(data_dir / "wallet.sqlite", None, REGTEST, seed=Seed.from_mnemonic(words, REGTEST)).close()

    @property
    def cookie(self) -> Path:
        return Path(self.node.cookie)

    @property
    def rpc_url(self) -> str:
        return self.node.url

    async def start(self) -> None:
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
                f"--logfile={self.log}", "paychan", "--data-dir", str(self.data_dir),
                "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--fee-rate", "1000", "--api-listen", "none",
                *self.extra]
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env={**ENV, **self.env}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, "server did not start in 60 s"
            await task.deferLater(reactor, 0.05, lambda: None)


def _schema_url(postgres) -> tuple[str, str]:
    info = postgres.fresh_database()
    schema = info.rsplit("search_path=", 1)[1].rstrip("'")
    return schema, f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres?options=-c%20search_path%3D{schema}"


class TwoNodes:
    """Nodes A and B (``twistd paychan``) on one schema and one regtest node, started together,
    and the clients a test makes; ``two_nodes`` stops all of them, whatever the test did."""

    def __init__(self, schema: str, node: "Node", a: "ClusterServer", b: "ClusterServer") -> None:
        self.schema, self.node, self.a, self.b = schema, node, a, b
        self.clients: list[RemoteClient] = []

    def client(self, tmp: Path, server: "ClusterServer") -> RemoteClient:
        tmp.mkdir(exist_ok=True)  # or a client's files copied there
        client = RemoteClient(tmp, server)
        self.clients.append(client)
        return client


@asynccontextmanager
async def two_nodes(tmp_path: Path, postgres, words: str, *options: str,
                    a_env: Optional[dict] = None) -> AsyncIterator[TwoNodes]:
    schema, url = _schema_url(postgres)
    node = Node(tmp_path)
    await node.start()
    a = ClusterServer(tmp_path / "a", node, url, "A", words, *options, env=a_env)
    b = ClusterServer(tmp_path / "b", node, url, "B", words, *options)
    both = TwoNodes(schema, node, a, b)
    try:
        await defer.gatherResults([defer.ensureDeferred(a.start()), defer.ensureDeferred(b.start())])
        yield both
    finally:
        for client in both.clients:
            await client.close()
        for server in (a, b):
            if server.proc is not None:
                await server.stop()
        node.stop()



def _channel(postgres, schema: str, txid: bytes) -> dict[str, Any]:
    with psycopg.connect(postgres.conninfo(schema)) as db:
        cur = db.execute("SELECT best_value, state, settlement_tx, owner_node, duty_node, server_key "
                         "FROM server_channels WHERE contract_txid = %s", (txid,))
        row = cur.fetchone()
        assert row is not None
        return {d.name: v for d, v in zip(cur.description, row)}


async def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await task.deferLater(reactor, 0.1, lambda: None)


async def _pay_until_refused(conn: Any, count: int, acks: list[int]) -> Optional[str]:
    """Pay ``count`` times, one after the other; each acknowledged amount goes in ``acks``; the
    error that stopped it, if one did."""
    for _ in range(count):
        try:
            acks.append((await conn.pay(1000)).amount)
        except Exception as e:  # the server refused or closed: what the test looks at
            return f"{type(e).__name__}: {e}"
    return None


def _copy_client(src: Path, dst: Path) -> None:
    dst.mkdir()
    for f in src.iterdir():
        if f.name.startswith(("client-wallet.sqlite", "client-channels.sqlite")):
            shutil.copy2(f, dst / f.name)


@pytest.fixture
def words() -> str:
    return Seed.generate(REGTEST).mnemonic()


@pytest_twisted.ensureDeferred
async def test_one_channel_resumed_on_two_nodes_at_once_is_kept_by_one(tmp_path, postgres, words) -> None:
    async with two_nodes(tmp_path, postgres, words) as nodes:
        schema, a, b = nodes.schema, nodes.a, nodes.b
        settings = ClientSettings(channel_value=VALUE, fee_rate=1000)
        first = nodes.client(tmp_path / "c1", a)
        await first.open()
        conn = await first.connect(settings, SERVER_ID)
        txid = conn.contract_txid
        before: list[int] = []
        assert await _pay_until_refused(conn, 3, before) is None
        conn.disconnect()
        await first.close()
        nodes.clients.remove(first)
        stored = _channel(postgres, schema, txid)["best_value"]

        # The same client twice (its files copied): one copy resumes on A, the other on B.
        _copy_client(tmp_path / "c1", tmp_path / "c2")
        on_a, on_b = nodes.client(tmp_path / "c1", a), nodes.client(tmp_path / "c2", b)
        await on_a.open()
        await on_b.open()
        # One process's clients do not resume one channel twice (client._ACTIVE); these two stand
        # for two client processes, so each resume is let through.
        client_module._ACTIVE.discard(txid)
        conn_a = await on_a.connect(settings, SERVER_ID)
        client_module._ACTIVE.discard(txid)
        conn_b = await on_b.connect(settings, SERVER_ID)
        assert conn_a.resumed and conn_b.resumed and conn_a.contract_txid == conn_b.contract_txid == txid
        acks_a: list[int] = []
        acks_b: list[int] = []
        errors = await defer.gatherResults([defer.ensureDeferred(_pay_until_refused(conn_a, 8, acks_a)),
                                            defer.ensureDeferred(_pay_until_refused(conn_b, 8, acks_b))])
        # Exactly one connection kept it; the other's first payment was refused, none acknowledged.
        assert sorted([len(acks_a), len(acks_b)]) == [0, 8], (acks_a, acks_b, errors)
        winner, acks, keeper = (on_a, acks_a, "A") if acks_a else (on_b, acks_b, "B")
        assert errors == ([None, errors[1]] if acks_a else [errors[0], None]) and None in errors
        row = _channel(postgres, schema, txid)
        assert row["best_value"] == stored + sum(acks) and row["owner_node"] == keeper, (row, stored, acks)
        record = await winner.store.client_channel(txid)
        assert record.value - record.client_change == row["best_value"]
        # Both servers saw the same channel key: it was derived from the shared words, its path
        # stored, never the key.
        with psycopg.connect(postgres.conninfo(schema)) as db:
            [(path,)] = db.execute("SELECT path FROM channel_keys WHERE public_key = %s",
                                   (row["server_key"],)).fetchall()
        assert path.startswith("m/84h/1h/0h/2/")
    for server in (a, b):
        assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


@pytest_twisted.ensureDeferred
async def test_a_resume_on_another_node_takes_the_channel_over_and_closes_the_old_connection(
        tmp_path, postgres, words) -> None:
    async with two_nodes(tmp_path, postgres, words) as nodes:
        schema, a, b = nodes.schema, nodes.a, nodes.b
        settings = ClientSettings(channel_value=VALUE, fee_rate=1000)
        on_a = nodes.client(tmp_path / "c1", a)
        await on_a.open()
        conn_a = await on_a.connect(settings, SERVER_ID)
        txid = conn_a.contract_txid
        assert await _pay_until_refused(conn_a, 3, []) is None
        # The client, as it is now, carries on from elsewhere (its files copied, idle) on B.
        _copy_client(tmp_path / "c1", tmp_path / "c2")
        on_b = nodes.client(tmp_path / "c2", b)
        await on_b.open()
        client_module._ACTIVE.discard(txid)  # two client processes, as in the test above
        conn_b = await on_b.connect(settings, SERVER_ID)
        assert conn_b.resumed
        acks: list[int] = []
        assert await _pay_until_refused(conn_b, 2, acks) is None  # B's first payment claims the channel
        assert _channel(postgres, schema, txid)["owner_node"] == "B"
        # A closes its connection within a heartbeat (--duty-takeover 3: every second), unasked.
        await _until(lambda: conn_a.channel.closed.called, 10, "A closes the connection it lost")
        assert "claimed by a connection on node B" in a.log.read_text()
        stored = _channel(postgres, schema, txid)["best_value"]
        record = await on_b.store.client_channel(txid)
        assert stored == record.value - record.client_change


@pytest_twisted.ensureDeferred
async def test_a_node_killed_mid_stream_and_the_client_goes_on_at_the_other(tmp_path, postgres, words) -> None:
    """A dies (SIGKILL, between storing a payment and acknowledging it); the client resumes the
    channel on B (by hand here; in tests/e2e/test_kill_cluster_node.py the client fails over by
    itself) and pays on; B settles, and the settlement pays the server every payment the client
    counted as made:
    every acknowledged one, and the one A stored and never acknowledged (its c was stored
    before the payment left, and b is cumulative)."""
    from twisted_paychan.bitcoin.transactions import parse_transaction

    async with two_nodes(tmp_path, postgres, words,
                         a_env={"PAYCHAN_CRASH_AT": "payment-stored", "PAYCHAN_CRASH_AFTER": "4"}) as nodes:
        schema, a, b = nodes.schema, nodes.a, nodes.b
        client = nodes.client(tmp_path / "c", a)
        await client.open()
        settings = ClientSettings(channel_value=VALUE, fee_rate=1000, reply_timeout=20)
        conn = await client.connect(settings, SERVER_ID)
        txid = conn.contract_txid
        opened_at = _channel(postgres, schema, txid)["best_value"]
        acks: list[int] = []
        assert await _pay_until_refused(conn, 10, acks) is not None  # A died mid-stream
        assert await a.crashed()
        client.server = b
        client_module._ACTIVE.discard(txid)
        conn = await client.connect(settings, SERVER_ID)
        assert conn.resumed and conn.contract_txid == txid
        assert await _pay_until_refused(conn, 5, acks) is None
        settlement = await conn.settle()
        assert isinstance(settlement, bytes)
        record = await client.store.client_channel(txid)
        row = _channel(postgres, schema, txid)
        assert row["owner_node"] == "B" and bytes(row["settlement_tx"]) == settlement
        paid = VALUE - record.client_change
        assert row["best_value"] == paid
        assert opened_at + sum(acks) <= paid <= opened_at + sum(acks) + 1000  # at most A's unacknowledged one
        outputs = sorted(out.nValue for out in parse_transaction(settlement).vout)
        assert record.client_change in outputs  # the client gets exactly its change
        [server_out] = [v for v in outputs if v != record.client_change]
        assert paid - 2000 < server_out < paid  # the server gets b less the fee
        await client.chain.connection.call("generatetoaddress", 1, await client.wallet.new_address())
        await _until(lambda: _channel(postgres, schema, txid)["state"] == "settled", 20, "the settlement confirms")


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_expiry_duty_is_taken_over_and_its_stored_settlement_confirms_once(
        tmp_path, postgres, words) -> None:
    window = ("--time-window-min", "7200", "--time-window-max", "7200")  # settle as soon as stored
    async with two_nodes(tmp_path, postgres, words, *window, a_env={"PAYCHAN_CRASH_AT": "settlement-stored"}) as nodes:
        schema, a, b = nodes.schema, nodes.a, nodes.b
        client = nodes.client(tmp_path / "c", a)
        await client.open()
        settings = ClientSettings(channel_value=VALUE, fee_rate=1000, time_window=7200)
        try:
            conn = await client.connect(settings, SERVER_ID)
            txid = conn.contract_txid
        except Exception:  # A died before CHANNEL_OPEN reached the client: read the txid back
            [record] = await client.store.client_channels()
            txid = record.contract_txid
        assert await a.crashed(), "A should have died at the crash point"
        row = _channel(postgres, schema, txid)
        assert row["state"] == "settling" and row["duty_node"] == "A", row
        settlement = bytes(row["settlement_tx"])

        # B takes the duty over within --duty-takeover (3 s) and broadcasts the stored settlement.
        await _until(lambda: _channel(postgres, schema, txid)["duty_node"] == "B", 15, "B takes the duty over")
        settlement_txid = tx_id(settlement)[::-1].hex()
        connection = client.chain.connection

        async def in_mempool() -> bool:
            return settlement_txid in await connection.call("getrawmempool")

        deadline = time.monotonic() + 15
        while not await in_mempool():
            assert time.monotonic() < deadline, "B did not broadcast the stored settlement"
            await task.deferLater(reactor, 0.1, lambda: None)
        burn = await client.wallet.new_address()
        await connection.call("generatetoaddress", 1, burn)
        await _until(lambda: _channel(postgres, schema, txid)["state"] == "settled", 20, "the settlement confirms")
        row = _channel(postgres, schema, txid)
        assert bytes(row["settlement_tx"]) == settlement  # the one A stored, never another
        info = await connection.call("getrawtransaction", settlement_txid, True)
        assert info["confirmations"] == 1
        assert "takes over channel" in b.log.read_text()


@pytest_twisted.ensureDeferred
async def test_the_database_restarts_under_two_nodes_and_nothing_acknowledged_is_lost(
        tmp_path, postgres, words) -> None:
    async with two_nodes(tmp_path, postgres, words) as nodes:
        schema, a, b = nodes.schema, nodes.a, nodes.b
        clients = [nodes.client(tmp_path / "ca", a), nodes.client(tmp_path / "cb", b)]
        settings = ClientSettings(channel_value=VALUE, fee_rate=1000)
        conns, acked = [], []
        for client in clients:
            await client.open()
            conn = await client.connect(settings, SERVER_ID)
            conns.append(conn)
            acked.append(_channel(postgres, schema, conn.contract_txid)["best_value"])
        for i, conn in enumerate(conns):
            acks: list[int] = []
            assert await _pay_until_refused(conn, 3, acks) is None
            acked[i] += sum(acks)

        await threads.deferToThread(postgres.stop, "fast")
        try:
            for i, conn in enumerate(conns):  # in flight while the database is down: refused
                acks = []
                error = await _pay_until_refused(conn, 1, acks)
                assert error is not None and acks == [], (error, acks)
        finally:
            await threads.deferToThread(postgres.start)

        for i, client in enumerate(clients):  # resumed on the same node, which goes on
            txid = conns[i].contract_txid
            conn = await client.connect(settings, SERVER_ID)
            assert conn.resumed and conn.contract_txid == txid
            acks = []
            assert await _pay_until_refused(conn, 3, acks) is None
            acked[i] += sum(acks)
            # Every acknowledged payment is stored; so is the one refused in the outage, as the
            # client signs b cumulatively and counted it spent when it stored c (PROTOCOL.md:
            # c is stored before UPDATE_PAYMENT leaves), so the store and its record agree.
            best_value = _channel(postgres, schema, txid)["best_value"]
            record = await client.store.client_channel(txid)
            assert best_value == record.value - record.client_change and best_value >= acked[i]
        assert a.proc is not None and a.proc.poll() is None and b.proc is not None and b.proc.poll() is None
    for server in (a, b):
        log = server.log.read_text()
        assert "payment refused by the store: PostgreSQL" in log
        assert "Traceback" not in log, log[-3000:]


def test_a_node_given_other_words_refuses_to_start_in_one_line(tmp_path, postgres) -> None:
    from twisted_paychan.store.postgres import migrate

    schema, url = _schema_url(postgres)
    with psycopg.connect(postgres.conninfo(schema), autocommit=True) as db:
        migrate(db)
        db.execute("INSERT INTO cluster_meta (name, value) VALUES ('seed', '0123456789abcdef')")
    done = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon",
                           "--pidfile=", "--logfile=-", "paychan", "--data-dir", str(tmp_path / "d"),
                           "--api-listen", "none", "--rpc-listen", "none", "--listen", "tcp:0:interface=127.0.0.1",
                           "--store", url],
                          cwd=str(REPO), env=ENV, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    lines = [line for line in output.splitlines() if "paychan: not starting:" in line]
    assert len(lines) == 1 and "is not the cluster's (0123456789abcdef)" in lines[0], output
    assert "Traceback" not in output


def test_a_busy_listen_port_refuses_a_postgresql_node_in_one_line_and_it_exits(tmp_path, postgres) -> None:
    """The store's thread is running by then; the refused start still ends the process (it
    used to wait for ever for a reactor that never ran)."""
    import socket

    _, url = _schema_url(postgres)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon",
                               "--pidfile=", "--logfile=-", "paychan", "--data-dir", str(tmp_path / "d"),
                               "--api-listen", "none", "--rpc-listen", "none",
                               "--listen", f"tcp:{port}:interface=127.0.0.1", "--store", url],
                              cwd=str(REPO), env=ENV, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    lines = [line for line in output.splitlines() if "paychan: not starting:" in line]
    assert len(lines) == 1 and "cannot listen on --listen" in lines[0], output
    assert "Traceback" not in output


def test_the_cluster_options_need_a_postgresql_store() -> None:
    from twisted.python import usage

    from twisted_paychan.tap import Options

    for argv in (["--node-id", "a"], ["--duty-takeover", "5"]):
        with pytest.raises(usage.UsageError, match="are for --store postgresql"):
            Options().parseOptions(argv)
    options = Options()
    options.parseOptions(["--store", "postgresql://paychan@db/paychan", "--duty-takeover", "5", "--node-id", "a"])
    assert (options["duty-takeover"], options["node-id"]) == (5.0, "a")
    with pytest.raises(usage.UsageError, match="must be positive"):
        Options().parseOptions(["--store", "postgresql://paychan@db/paychan", "--duty-takeover", "0"])
