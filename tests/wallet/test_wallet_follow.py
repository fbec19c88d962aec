"""The wallet follows the chain (issue #21): one scan, then block by block and through the
mempool; a reorganisation undoes what it credited; a restart catches up from the block it
stored (and rolls back first if the chain reorganised below it); only what changed is written;
a restore finds every payout coin with one scan; a schema-2 file is migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.chain.types import OutPoint
from twisted_paychan.wallet import MemoryWallet, SqliteWallet
from twisted_paychan.wallet.follow import UNDO_DEPTH
from twisted_paychan.wallet.restore import find_coins
from twisted_paychan.wallet.sqlite import SCHEMA_VERSION
from wallet_conformance import TARGET, result


def _chain() -> tuple[Clock, MemoryChain]:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock, MemoryChain(clock)


class Calls:
    """Counts the chain's scans and per-script queries."""

    def __init__(self, chain: MemoryChain) -> None:
        self.scans: list[list[bytes]] = []
        self.per_script = 0
        real_scan, real_unspent = chain.scan_outputs, chain.unspent_outputs

        def scan(scripts: Any) -> Any:
            self.scans.append(list(scripts))
            return real_scan(scripts)

        def unspent(script: bytes) -> Any:
            self.per_script += 1
            return real_unspent(script)

        chain.scan_outputs = scan  # type: ignore[method-assign]
        chain.unspent_outputs = unspent  # type: ignore[method-assign]


def _pay(chain: MemoryChain, payer: MemoryWallet, script: bytes, value: int) -> bytes:
    funded = result(payer.fund(script, value, 1000))
    result(chain.broadcast(funded.tx))
    return funded.txid


def _rich(chain: MemoryChain) -> MemoryWallet:
    payer = MemoryWallet(chain)
    chain.credit(result(payer.payout_script()), 10_000_000)
    return payer


def test_blocks_and_mempool_are_followed_without_a_scan() -> None:
    clock, chain = _chain()
    calls = Calls(chain)
    payer, wallet = _rich(chain), MemoryWallet(chain)
    wallet.start()
    clock.advance(0)
    assert len(calls.scans) == 1 and wallet.scans == 1
    script = result(wallet.settlement_payout_script(b"\x01" * 32))
    txid = _pay(chain, payer, script, 40_000)
    clock.advance(0)
    assert result(wallet.balance()).unconfirmed == 40_000
    chain.mine()
    clock.advance(0)
    assert result(wallet.balance()).confirmed == 40_000
    spent = result(wallet.fund(TARGET, 20_000, 1000))
    assert spent.spent == (OutPoint(txid, 0),)
    result(chain.broadcast(spent.tx))
    chain.mine(3)
    clock.advance(0)
    change = 40_000 - 20_000 - spent.fee
    assert result(wallet.balance()).confirmed == change
    assert wallet.scans == 1 and calls.per_script == 0


def test_a_reorganisation_undoes_a_credited_payment(tmp_path: Path) -> None:
    clock, chain = _chain()
    payer = _rich(chain)
    wallet = SqliteWallet.open(tmp_path / "w.sqlite", chain)
    wallet.start()
    script = result(wallet.settlement_payout_script(b"\x02" * 32))
    _pay(chain, payer, script, 55_000)
    chain.mine()
    clock.advance(0)
    assert (result(wallet.balance()).confirmed, result(wallet.balance()).unconfirmed) == (55_000, 0)
    synced = wallet.synced_to
    assert synced is not None
    chain.reorg(1)  # the block holding the payment goes; the payment is back in the mempool
    clock.advance(0)
    balance = result(wallet.balance())
    assert (balance.confirmed, balance.unconfirmed) == (0, 55_000)
    assert wallet.synced_to is not None and wallet.synced_to[0] == synced[0] + 1 and wallet.synced_to != synced
    rows = wallet._db.execute("SELECT COUNT(*) FROM coins").fetchone()[0]
    assert rows == 0  # the confirmed coin's row went with its block
    chain.mine()
    clock.advance(0)
    assert result(wallet.balance()).confirmed == 55_000
    wallet.close()


def test_a_restart_catches_up_on_blocks_mined_while_down(tmp_path: Path) -> None:
    clock, chain = _chain()
    payer = _rich(chain)
    path = tmp_path / "w.sqlite"
    wallet = SqliteWallet.open(path, chain)
    scripts = [result(wallet.settlement_payout_script(bytes([i]) * 32)) for i in range(1, 4)]
    _pay(chain, payer, scripts[0], 30_000)
    chain.mine()
    assert result(wallet.balance()).confirmed == 30_000
    funded = result(wallet.fund(TARGET, 10_000, 1000))
    wallet.close()

    # While it is down: its transaction confirms, and two more payments arrive.
    result(chain.broadcast(funded.tx))
    chain.mine()
    _pay(chain, payer, scripts[1], 20_000)
    chain.mine(2)
    _pay(chain, payer, scripts[2], 7_000)  # still in the mempool

    calls = Calls(chain)
    wallet = SqliteWallet.open(path, chain)
    try:
        balance = result(wallet.balance())
        change = 30_000 - 10_000 - funded.fee
        assert (balance.confirmed, balance.unconfirmed) == (change + 20_000, 7_000)
        assert calls.scans == [] and calls.per_script == 0  # caught up from its blocks, no scan
        assert wallet.reserved_transactions() == []  # the chain spent them
        tip = result(chain.tip())
        assert wallet.synced_to == (tip.height, tip.block_hash)
    finally:
        wallet.close()


def test_a_restart_rolls_back_what_the_chain_reorganised_below_it(tmp_path: Path) -> None:
    clock, chain = _chain()
    payer = _rich(chain)
    path = tmp_path / "w.sqlite"
    wallet = SqliteWallet.open(path, chain)
    script = result(wallet.settlement_payout_script(b"\x03" * 32))
    result(wallet.balance())
    _pay(chain, payer, script, 25_000)
    chain.mine()
    assert result(wallet.balance()).confirmed == 25_000
    wallet.close()
    chain.reorg(1)
    wallet = SqliteWallet.open(path, chain)
    try:
        assert wallet.synced_to is not None  # still the stored block, until it looks
        balance = result(wallet.balance())
        assert (balance.confirmed, balance.unconfirmed) == (0, 25_000)
        assert wallet.scans == 0
    finally:
        wallet.close()


def test_a_reorganisation_deeper_than_remembered_scans_again(tmp_path: Path) -> None:
    clock, chain = _chain()
    payer = _rich(chain)
    wallet = MemoryWallet(chain)
    script = result(wallet.settlement_payout_script(b"\x04" * 32))
    _pay(chain, payer, script, 12_000)
    chain.mine(UNDO_DEPTH + 5)
    assert result(wallet.balance()).confirmed == 12_000
    assert wallet.scans == 1
    chain.reorg(UNDO_DEPTH + 4)  # the payment's block stays; everything above it goes
    assert result(wallet.balance()).confirmed == 12_000
    assert wallet.scans == 2


def test_a_block_writes_only_what_changed(tmp_path: Path) -> None:
    """With many coins, a block paying one more writes that coin, the block and nothing else."""
    clock, chain = _chain()
    payer = _rich(chain)
    wallet = SqliteWallet.open(tmp_path / "w.sqlite", chain)
    scripts = [result(wallet.settlement_payout_script(i.to_bytes(32, "big"))) for i in range(1, 301)]
    for script in scripts[:-1]:
        chain.credit(script, 1_000)
    wallet.start()
    clock.advance(0)
    statements: list[str] = []
    wallet._db.set_trace_callback(statements.append)
    _pay(chain, payer, scripts[-1], 5_000)
    chain.mine()
    clock.advance(0)
    writes = [s for s in statements if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) <= 6, writes
    assert not any(s.strip() == "DELETE FROM coins" for s in statements)
    assert wallet._db.execute("SELECT COUNT(*) FROM coins WHERE spent_height IS NULL").fetchone()[0] == 300
    wallet.close()


def test_restore_finds_every_payout_coin_with_one_scan() -> None:
    clock, chain = _chain()
    old = MemoryWallet(chain)
    words = old.mnemonic()
    payouts = [result(old.settlement_payout_script(i.to_bytes(32, "big"))) for i in range(1, 61)]
    for i, script in enumerate(payouts):
        chain.credit(script, 1_000 + i)
    chain.mine()
    calls = Calls(chain)
    new = MemoryWallet(chain, mnemonic=words)
    report = result(find_coins_d(new, chain))
    assert report.scans == 1 and len(calls.scans) == 1 and calls.per_script == 0
    assert report.keys["payout"] == 61 and report.coins == 60
    assert result(new.balance()).confirmed == sum(1_000 + i for i in range(60))
    assert len(calls.scans) == 1  # the restore's scan is the wallet's one full scan


def test_restore_scans_again_only_near_the_windows_end() -> None:
    clock, chain = _chain()
    old = MemoryWallet(chain)
    payouts = [result(old.settlement_payout_script(i.to_bytes(32, "big"))) for i in range(1, 41)]
    chain.credit(payouts[24], 5_000)  # key 25: within the gap (20) of a window of 30
    chain.credit(payouts[34], 6_000)  # key 35: found by the second scan, window 60
    new = MemoryWallet(chain, mnemonic=old.mnemonic())
    report = result(find_coins_d(new, chain, window=30))
    assert report.scans == 2 and report.keys["payout"] == 36
    assert result(new.balance()).confirmed == 11_000


def find_coins_d(wallet: Any, chain: Any, **options: Any) -> Any:
    from twisted.internet import defer

    return defer.ensureDeferred(find_coins(wallet, chain, **options))


def test_a_schema_2_file_is_migrated_and_scanned_once(tmp_path: Path) -> None:
    clock, chain = _chain()
    path = tmp_path / "w.sqlite"
    wallet = SqliteWallet.open(path, chain)
    address = result(wallet.new_address())
    wallet.close()
    # Back to what schema 2 was: no spent_height, no blocks, a stale coin cache and tip_height.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE blocks")
    db.execute("DROP INDEX coins_by_height")
    db.execute("DROP INDEX coins_by_spent_height")
    db.execute("ALTER TABLE coins DROP COLUMN spent_height")
    db.execute("INSERT INTO coins VALUES (?, 0, 999, ?, 1, 0)", (b"\x55" * 32, b"\x00\x14" + b"\x55" * 20))
    db.execute("INSERT INTO meta VALUES ('tip_height', '1')")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    chain.credit(address_to_script(address, REGTEST), 80_000)
    calls = Calls(chain)
    wallet = SqliteWallet.open(path, chain)
    try:
        assert result(wallet.balance()).confirmed == 80_000
        assert len(calls.scans) == 1
        assert wallet._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert wallet._db.execute("SELECT value FROM meta WHERE name = 'tip_height'").fetchone() is None
    finally:
        wallet.close()

