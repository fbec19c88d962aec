"""A server that runs for months (issue #21): a settled channel leaves nothing behind in the
manager, the chain's watch lists or the clock, and a settlement the node holds is not offered
to it again on every block."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channel"))

from channel_pair import Pair, full_cycle, result_of  # noqa: E402

from twisted_paychan.chain.types import ChainTip, OutPoint, SpendEvent, TxState, TxStatus  # noqa: E402
from twisted_paychan.chain.embedded.watchers import Watchers  # noqa: E402
from twisted_paychan.channel.records import ServerChannelState  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings, VersionSelector  # noqa: E402
from twisted_paychan.net.rebroadcast import MAX_GAP, RebroadcastSchedule  # noqa: E402

SETTINGS = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)


def _held(pair: Pair) -> tuple[int, int, int]:
    """(channels the manager holds, live spend watches, timers armed)."""
    return len(pair.channels._channels), pair.chain._watchers.watching, len(pair.clock.getDelayedCalls())


def test_settled_channels_release_everything_however_many_come_and_go():
    pair = Pair(funds=5_000_000_000)
    result_of(pair.channels.start())
    full_cycle(pair, SETTINGS)
    pair.mine(1)
    baseline = _held(pair)  # the manager's prune timer only
    for _ in range(4):
        txids = [full_cycle(pair, SETTINGS) for _ in range(10)]
        # Settling: the contract's six-hour "never confirmed" timer is gone with OPEN.
        now = pair.clock.seconds()
        assert not [c for c in pair.clock.getDelayedCalls()
                    if c.getTime() - now > 3000 and c.func.__name__ == "_timer_fired"]
        pair.mine(1)
        for txid in txids:
            assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLED
        assert _held(pair) == baseline
    assert baseline[:2] == (0, 0)


def test_a_released_channel_is_read_back_when_asked_about():
    pair = Pair(funds=5_000_000_000)
    result_of(pair.channels.start())
    txid = full_cycle(pair, SETTINGS)
    pair.mine(1)
    assert txid not in pair.channels._channels
    settlement = result_of(pair.channels.settle(txid))  # already settled: its settlement
    assert settlement == result_of(pair.server_store.server_channel(txid)).settlement_tx
    assert txid not in pair.channels._channels


def test_a_settlement_the_node_holds_is_not_offered_again_on_each_block():
    pair = Pair(funds=5_000_000_000)
    result_of(pair.channels.start())
    full_cycle(pair, SETTINGS)
    sent: list[bytes] = []
    broadcast = pair.chain.broadcast
    pair.chain.broadcast = lambda tx: (sent.append(tx), broadcast(tx))[1]  # type: ignore[method-assign]
    tip = result_of(pair.chain.tip())
    for height in range(tip.height + 1, tip.height + 20):  # blocks that leave it in the mempool
        pair.channels._new_block(ChainTip(height, b"\x00" * 32, tip.time, tip.median_time_past))
        pair.clock.advance(0)
    assert sent == []
    assert list(pair.channels._settling) == list(pair.channels._channels)  # a block looks at these only
    pair.channels.stop()


def test_rebroadcast_schedule_backs_off_and_resets():
    schedule = RebroadcastSchedule()
    offered = [h for h in range(1, 300) if schedule.due(h)]
    assert offered[:6] == [1, 2, 4, 8, 16, 32]
    assert all(b - a <= MAX_GAP for a, b in zip(offered, offered[1:]))
    schedule.reset()
    assert schedule.due(300)


def test_embedded_watchers_look_only_at_the_outpoints_a_change_spends():
    asked: list[OutPoint] = []
    spender: dict[OutPoint, bytes] = {}

    def spender_of(point: OutPoint) -> bytes | None:
        asked.append(point)
        return spender.get(point)

    from twisted.internet.task import Clock

    clock = Clock()
    watchers = Watchers(clock, spender_of, lambda txid: TxStatus(TxState.MEMPOOL), lambda txid: b"raw")
    points = [OutPoint(bytes([n]) * 32, 0) for n in range(200)]
    heard: list[SpendEvent] = []
    watches = [watchers.watch_spend(p, heard.append) for p in points]
    asked.clear()
    spender[points[7]] = b"\x01" * 32
    watchers.touched([points[7], OutPoint(b"\xff" * 32, 3)], False)
    clock.advance(0)
    assert asked == [points[7]]
    assert [e.outpoint for e in heard] == [points[7]]
    asked.clear()
    watchers.touched([], True)  # a block: only the watch whose outpoint has a spender
    assert asked == [points[7]]
    for watch in watches:
        watch.cancel()
    assert watchers.watching == 0
    assert not watchers._spent  # a cancelled watch (its callback holds a channel) is let go at once


def test_start_prune_and_settle_all_read_only_the_channels_they_need():
    """A server that ran for months holds every channel it ever had; a restart loads the live
    ones, the periodic prune the failed contracts, ``settle_all`` the settleable ones, each by
    the store's listing of those states, never the whole history."""
    from twisted_paychan.net.server_manager import SETTLEABLE, ServerChannelManager

    pair = Pair(funds=5_000_000_000)
    result_of(pair.channels.start())
    for _ in range(3):
        full_cycle(pair, SETTINGS)
    pair.mine(1)
    client = pair.connect(SETTINGS)  # one channel still open
    open_txid = result_of(client.opened).contract_txid
    store = pair.server_store
    asked: list[tuple[object, int]] = []
    real = store.server_channels

    def spy(states=None, limit=None, offset=0):
        return real(states, limit, offset).addCallback(
            lambda records: asked.append((None if states is None else frozenset(states), len(records))) or records)

    store.server_channels = spy
    restarted = ServerChannelManager(pair.server_wallet, pair.chain, store, pair.server_settings, pair.clock)
    result_of(restarted.start())
    result_of(restarted.prune())
    result_of(restarted.settle_all())
    assert all(states is not None for states, _ in asked), asked
    assert not any(ServerChannelState.SETTLED in states for states, _ in asked), asked
    assert (frozenset({ServerChannelState.CONTRACT_FAILED}), 0) in asked
    assert (frozenset(SETTLEABLE), 1) in asked
    assert result_of(store.server_channel(open_txid)).state is not ServerChannelState.OPEN  # settle_all did
    restarted.stop()
