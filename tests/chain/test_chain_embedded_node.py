"""
The embedded node as a node: it survives a restart, owns its data directory, follows reorgs,
reports the kernel's reasons for refused blocks, and mines on a clock.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from bitcoin.core import CBlock
from twisted.internet.task import Clock

from chain_txs import ANYONE_CAN_SPEND, Coin, Key, spend, txid_of
from twisted_paychan.chain.embedded import miner
from twisted_paychan.chain.embedded.chain import EmbeddedChain
from twisted_paychan.chain.embedded.datadir import DatadirInUse
from twisted_paychan.chain.embedded.node import MiningFailed, RegtestNode
from twisted_paychan.chain.types import ChainTip, OutPoint, SpendEvent, TxState

START = 1_700_000_000
ALICE = Key.from_seed(b"node alice")
BOB = Key.from_seed(b"node bob")


def _clock(at: float = START) -> Clock:
    clock = Clock()
    clock.advance(at)
    return clock


def _mature_coin(node: RegtestNode, height: int = 1) -> Coin:
    [utxo] = [u for u in node.unspent_outputs(ANYONE_CAN_SPEND) if u.height == height and u.coinbase]
    return Coin(utxo.outpoint, utxo.value, None)


def _utxo_view(node: RegtestNode) -> list[object]:
    return [node.unspent_outputs(s) for s in (ANYONE_CAN_SPEND, ALICE.p2pkh, BOB.p2pkh, BOB.p2wpkh)]


def test_reopen_resumes_at_the_same_tip_with_the_same_utxos(tmp_path: Path) -> None:
    clock = _clock()
    node = RegtestNode(tmp_path, clock)
    node.generate(101)
    to_alice = spend([_mature_coin(node)], [(ALICE.p2pkh, 10_000_000), (BOB.p2wpkh, 20_000_000)])
    node.accept(to_alice)
    node.generate(1)
    to_bob = spend([Coin(OutPoint(txid_of(to_alice), 0), 10_000_000, ALICE)], [(BOB.p2pkh, 9_999_000)])
    node.accept(to_bob)
    node.generate(2)
    tip, utxos = node.tip(), _utxo_view(node)
    status = node.tx_status(txid_of(to_bob))
    node.close()

    again = RegtestNode(tmp_path, clock)
    try:
        assert again.tip() == tip
        assert _utxo_view(again) == utxos
        assert again.tx_status(txid_of(to_bob)) == status
        assert again.raw_transaction(txid_of(to_alice)) == to_alice
        assert again.spender_of(OutPoint(txid_of(to_alice), 0)) == txid_of(to_bob)
        again.generate(1)  # and it carries on
        assert again.height == tip.height + 1
    finally:
        again.close()


def test_the_mempool_does_not_survive_a_restart(tmp_path: Path) -> None:
    node = RegtestNode(tmp_path, _clock())
    node.generate(101)
    raw = spend([_mature_coin(node)], [(ALICE.p2pkh, 10_000_000)])
    node.accept(raw)
    node.close()
    again = RegtestNode(tmp_path, _clock())
    try:
        assert again.tx_status(txid_of(raw)).state is TxState.UNKNOWN
        again.accept(raw)  # rebroadcasting is the caller's job, as with Core without mempool.dat
    finally:
        again.close()


def test_a_second_node_on_the_same_datadir_is_refused(tmp_path: Path) -> None:
    node = RegtestNode(tmp_path, _clock())
    try:
        with pytest.raises(DatadirInUse, match="in use by process"):
            RegtestNode(tmp_path, _clock())
    finally:
        node.close()
    RegtestNode(tmp_path, _clock()).close()  # free again once closed


def test_another_process_holding_the_datadir_is_named(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            f"fd = os.open({str(tmp_path / 'paychan.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, b'%d\\n' % os.getpid())\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(DatadirInUse) as info:
            RegtestNode(tmp_path, _clock())
        assert info.value.owner == holder.pid
        assert str(holder.pid) in str(info.value)
    finally:
        holder.communicate("\n")


def test_reorg_returns_transactions_to_the_mempool(tmp_path: Path) -> None:
    clock = _clock()
    chain = EmbeddedChain.open(tmp_path, clock)
    node = chain.node
    try:
        node.generate(101)
        coin = _mature_coin(node)
        raw = spend([coin], [(ALICE.p2pkh, coin.value - 1_000)])
        spends: list[SpendEvent] = []
        tips: list[ChainTip] = []
        chain.watch_spend(coin.outpoint, spends.append)
        chain.watch_blocks(tips.append)
        node.accept(raw)
        [old_tip] = node.generate(1)
        clock.advance(0)
        assert node.tx_status(txid_of(raw)).state is TxState.CONFIRMED
        assert [u.height for u in node.unspent_outputs(ALICE.p2pkh)] == [node.height]

        fork_base = node.height - 1
        parent = node.block_hash_at(fork_base)
        fork = []
        for height in (fork_base + 1, fork_base + 2):
            block = miner.build_block(parent, height, node.next_block_time() + 1, BOB.p2pkh, [], 0, tag=b"fork")
            fork.append(block)
            parent = block.block_hash
        side = node.submit_block(fork[0].raw)  # same work as the tip: stored on a side branch
        assert (side.accepted, side.reason, side.stored) == (False, "inconclusive", True)
        verdict = node.submit_block(fork[1].raw)
        assert verdict.accepted and node.block_hash_at(node.height) == fork[1].block_hash
        assert node.height_of(old_tip) is None
        assert node.submit_block(fork[1].raw).reason == "duplicate"

        assert node.tx_status(txid_of(raw)).state is TxState.MEMPOOL
        assert [u.height for u in node.unspent_outputs(ALICE.p2pkh)] == [None]
        assert sorted(u.height or 0 for u in node.unspent_outputs(BOB.p2pkh)) == [fork_base + 1, fork_base + 2]
        clock.advance(0)
        assert [e.status.state for e in spends] == [TxState.MEMPOOL, TxState.CONFIRMED, TxState.MEMPOOL]
        assert [t.block_hash for t in tips] == [old_tip, fork[0].block_hash, fork[1].block_hash]
        node.generate(1)
        assert node.tx_status(txid_of(raw)).confirmations == 1
    finally:
        chain.close()


def test_refused_blocks_carry_the_kernels_reason(tmp_path: Path) -> None:
    node = RegtestNode(tmp_path, _clock())
    try:
        node.generate(101)
        tip = node.block_hash_at(node.height)
        # A height below the block's own: its coinbase is final (locked to that height - 1, as
        # Core's), so BIP34 is what fails; one above fails finality first, as in Core.
        wrong_height = miner.build_block(tip, node.height - 5, node.next_block_time(), BOB.p2pkh, [], 0)
        assert node.submit_block(wrong_height.raw).reason == "bad-cb-height"
        too_high = miner.build_block(tip, node.height + 5, node.next_block_time(), BOB.p2pkh, [], 0)
        assert node.submit_block(too_high.raw).reason == "bad-txns-nonfinal"

        coin = _mature_coin(node)
        good = spend([coin], [(ALICE.p2pkh, coin.value - 1_000)])
        node.accept(good)
        node.generate(1)
        bad_sig = spend([Coin(OutPoint(txid_of(good), 0), coin.value - 1_000, ALICE)], [(BOB.p2pkh, 1_000_000)], corrupt=True)
        block = miner.build_block(
            node.block_hash_at(node.height), node.height + 1, node.next_block_time(), BOB.p2pkh,
            [bad_sig], coin.value - 1_000 - 1_000_000,
        )
        verdict = node.submit_block(block.raw)
        assert not verdict.accepted and verdict.stored
        assert verdict.reason.startswith("block-script-verify-flag-failed")
        assert node.submit_block(block.raw).reason == "duplicate-invalid"
        assert node.submit_block(b"\x00garbage").reason.startswith("block decode failed")
    finally:
        node.close()


def test_a_clock_far_ahead_of_the_machine_is_refused_by_the_kernel(tmp_path: Path) -> None:
    node = RegtestNode(tmp_path, _clock(time.time() + 3 * 3600))
    try:
        with pytest.raises(MiningFailed, match="time-too-new"):
            node.generate(1)
        assert node.height == 0
    finally:
        node.close()


def test_automatic_mining_on_the_reactor_clock(tmp_path: Path) -> None:
    clock = _clock()
    chain = EmbeddedChain.open(tmp_path, clock, mine_every=30)
    try:
        assert chain.node.height == 0
        clock.advance(30)
        assert chain.node.height == 1
        clock.pump([30] * 4)
        assert chain.node.height == 5
        assert chain.node.tip().time == START + 150
        chain.node.stop_mining()
        clock.advance(300)
        assert chain.node.height == 5
    finally:
        chain.close()


def test_a_block_of_a_hundred_transactions(tmp_path: Path) -> None:
    node = RegtestNode(tmp_path, _clock())
    try:
        node.generate(101)
        coin = _mature_coin(node)
        fan_out = spend([coin], [(ALICE.p2wpkh, 1_000_000)] * 100)
        node.accept(fan_out)
        node.generate(1)
        raws = [
            spend([Coin(OutPoint(txid_of(fan_out), i), 1_000_000, ALICE, segwit=True)], [(BOB.p2pkh, 999_000)])
            for i in range(100)
        ]
        for raw in raws:
            node.accept(raw)
        assert len(node.mempool_entries()) == 100
        [block_hash] = node.generate(1)
        assert node.mempool_entries() == []
        raw_block = node.block(block_hash)
        assert raw_block is not None and len(CBlock.deserialize(raw_block).vtx) == 101
        assert len(node.scan([BOB.p2pkh])) == 100
        assert node.header(block_hash) == raw_block[:80]
    finally:
        node.close()
