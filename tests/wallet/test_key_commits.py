"""A server's wallet commits the channel keys it keeps in a thread (``wallet.key_commits``):
the keys kept in one turn share a commit, each Deferred fires only once its key is on disk, the
channel record is stored only after that, and closing writes what is still queued."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.wallet import SqliteWallet
from twisted_paychan.wallet.keys import KeyPurpose
from wallet_conformance import result


def _stored_keys(path: Path) -> set[bytes]:
    """The public keys in the wallet file, read by a connection of our own (what a crash keeps)."""
    db = sqlite3.connect(path)
    try:
        return {bytes(k) for (k,) in db.execute("SELECT public_key FROM keys")}
    finally:
        db.close()


def _wallet(path: Path) -> SqliteWallet:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    wallet = SqliteWallet.open(path, MemoryChain(clock), REGTEST)
    wallet.commit_keys_in_thread(reactor)
    return wallet


@pytest_twisted.ensureDeferred
async def test_keys_kept_in_one_turn_share_a_commit_and_are_durable_when_it_fires(tmp_path: Path) -> None:
    path = tmp_path / "wallet.sqlite"
    wallet = _wallet(path)
    try:
        lent = [result(wallet.provisional_channel_key()).public_key for _ in range(5)]
        on_disk: list[set[bytes]] = []

        def look(_: None) -> None:
            on_disk.append(_stored_keys(path))

        kept: list[defer.Deferred[None]] = []
        for key in lent[:4]:
            d = wallet.keep_channel_key(key)
            assert isinstance(d, defer.Deferred) and not d.called  # the reactor does not wait
            kept.append(d.addCallback(look))
        again = wallet.keep_channel_key(lent[0])  # kept twice meanwhile: one row, both answered
        assert isinstance(again, defer.Deferred)
        await defer.gatherResults([*kept, again])
        assert all(set(lent[:4]) <= seen for seen in on_disk)
        assert wallet._key_commits is not None
        assert (wallet._key_commits.commits, wallet._key_commits.rows) == (1, 4)
        assert set(lent[:4]) <= set(wallet.public_keys(KeyPurpose.CHANNEL))
        assert wallet.provisional_count() == 1
        wallet.signer_for(lent[0])  # held like any stored key
        assert wallet.keep_channel_key(lent[0]) is None  # already stored: nothing to wait for
    finally:
        wallet.close()
    reopened = SqliteWallet.open(path, MemoryChain(task.Clock()), REGTEST)
    try:
        assert set(reopened.public_keys(KeyPurpose.CHANNEL)) == set(lent[:4])
    finally:
        reopened.close()


def test_closing_writes_the_keys_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "wallet.sqlite"
    wallet = _wallet(path)
    key = result(wallet.provisional_channel_key()).public_key
    d = wallet.keep_channel_key(key)
    assert isinstance(d, defer.Deferred) and not d.called
    wallet.close()  # before the reactor turned: written here
    assert result(d) is None
    assert key in _stored_keys(path)
