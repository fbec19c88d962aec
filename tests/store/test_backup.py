"""``twisted_paychan.backup`` on a store held open in this process (as a running server holds
it) and on one nobody holds: the copy has the payments still in the payment log, a checkpoint
during the copy makes it copy again, and what an operator can get wrong is refused in words."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from store_conformance import server_record
from twisted_paychan import backup as backup_module
from twisted_paychan.backup import BackupError, backup
from twisted_paychan.store.sqlite import SqliteChannelStore


def _best(path: Path, n: int) -> int:
    db = sqlite3.connect(path)
    try:
        (value,) = db.execute("SELECT best_value FROM server_channels WHERE contract_txid = ?",
                              (server_record(n).contract_txid,)).fetchone()
        return int(value)
    finally:
        db.close()


def test_online_copy_has_the_logged_payments(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = SqliteChannelStore(str(tmp_path / "data" / "channels.sqlite"))
    try:
        store.add_server_channel(server_record(1))
        store.record_payment(server_record(1).contract_txid, 4242, b"sig")  # in the log only
        result = backup(str(tmp_path / "data"), str(tmp_path / "out"))
    finally:
        store.close()
    assert result.online and result.logged_payments == 1 and result.server_channels == 1
    assert result.wallet_keys is None and result.files == ("channels.sqlite", "backup.json")
    assert _best(tmp_path / "out" / "channels.sqlite", 1) == 4242
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["backup.json", "channels.sqlite"]
    copy = SqliteChannelStore(str(tmp_path / "out" / "channels.sqlite"))
    got: list[Any] = []
    copy.server_channel(server_record(1).contract_txid).addCallback(got.append)
    copy.close()
    assert (got[0].best_value, got[0].best_signature) == (4242, b"sig")


def test_offline_copy_locks_the_store(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = SqliteChannelStore(str(tmp_path / "data" / "channels.sqlite"))
    store.add_server_channel(server_record(1))
    store.record_payment(server_record(1).contract_txid, 100, b"sig")
    store.close()
    result = backup(str(tmp_path / "data"), str(tmp_path / "out"))
    assert not result.online and result.logged_payments == 0
    assert _best(tmp_path / "out" / "channels.sqlite", 1) == 100
    SqliteChannelStore(str(tmp_path / "data" / "channels.sqlite")).close()  # the lock was given back


def test_a_checkpoint_during_the_copy_makes_it_copy_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    store = SqliteChannelStore(str(tmp_path / "data" / "channels.sqlite"))
    store.add_server_channel(server_record(1))
    store.record_payment(server_record(1).contract_txid, 5000, b"a")
    snapshots: list[str] = []
    real = backup_module._snapshot

    def snapshot_then_checkpoint(src: str, dst: str) -> None:
        real(src, dst)
        snapshots.append(src)
        if len(snapshots) == 1:
            # The server goes on: a write absorbs the log (new generation), and the next
            # payment overwrites the log's first slot. The log now read is no longer the one
            # that belongs to the snapshot.
            store.add_server_channel(server_record(2))
            store.record_payment(server_record(1).contract_txid, 6000, b"b")

    monkeypatch.setattr(backup_module, "_snapshot", snapshot_then_checkpoint)
    try:
        result = backup(str(tmp_path / "data"), str(tmp_path / "out"))
    finally:
        store.close()
    assert len(snapshots) == 2 and result.server_channels == 2
    assert _best(tmp_path / "out" / "channels.sqlite", 1) == 6000


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no channel store or wallet"):
        backup(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "data").mkdir()
    SqliteChannelStore(str(tmp_path / "data" / "channels.sqlite")).close()
    with pytest.raises(BackupError, match="must not be the data directory"):
        backup(str(tmp_path / "data"), str(tmp_path / "data"))
    backup(str(tmp_path / "data"), str(tmp_path / "out"))
    with pytest.raises(BackupError, match="already holds a backup"):
        backup(str(tmp_path / "data"), str(tmp_path / "out"))
