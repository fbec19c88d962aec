"""The server's wallet commits a new channel's key in a thread (``wallet.key_commits``); the
channel record is written only once that key is durable."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tcp_setup import Loopback
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


def _stored_keys(path: Path) -> set[bytes]:
    db = sqlite3.connect(path)
    try:
        return {bytes(k) for (k,) in db.execute("SELECT public_key FROM keys")}
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_the_server_stores_a_channel_only_after_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over loopback TCP, a server wallet committing keys in a thread: when the channel record
    is written, the key it names is already in the wallet file."""
    net: Any = Loopback(tmp_path)
    net.server_wallet.commit_keys_in_thread(reactor)
    seen: list[bool] = []
    real_add = net.server_store.add_server_channel

    def add(record: Any) -> Any:
        seen.append(record.server_key in _stored_keys(tmp_path / "server-wallet.sqlite"))
        return real_add(record)

    monkeypatch.setattr(net.server_store, "add_server_channel", add)
    await net.start()
    try:
        conn = await net.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2,
                                                fee_rate=1000))
        await conn.pay(1000)
        assert seen == [True]
        conn.disconnect()
        await conn.channel.closed
    finally:
        await net.stop()
