"""The client side of issue #21: a settled channel leaves ``ClientChannelManager`` once its
machine holds nothing (no timer, watch, connection or waiter), as the server's do, so a client
that opens channels for months looks at the live ones only on each block."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channel"))

from channel_pair import Pair, full_cycle, result_of  # noqa: E402

from twisted_paychan.channel.records import ClientChannelState  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings, VersionSelector  # noqa: E402

SETTINGS = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)


def _held(pair: Pair) -> tuple[int, int, int, int]:
    """(machines the client manager holds, its connections, its timers, its watches)."""
    m = pair.client_manager
    return len(m._machines), len(m._connections), len(m._timers), len(m._watches)


def test_settled_client_channels_leave_the_manager():
    pair = Pair(funds=5_000_000_000)
    result_of(pair.channels.start())
    for _ in range(3):
        txids = [full_cycle(pair, SETTINGS) for _ in range(5)]
        pair.mine(1)
        assert _held(pair) == (0, 0, 0, 0)
        for txid in txids:
            assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.SETTLED
            assert pair.client_manager.connection(txid) is None


def test_a_started_client_releases_a_channel_once_its_settlement_confirms():
    """With ``start()`` each channel has a refund timer and an output watch: both go, and the
    machine with them, when the settlement confirms; an open channel stays."""
    pair = Pair(funds=5_000_000_000)
    result_of(pair.channels.start())
    result_of(pair.client_manager.start())
    settled = full_cycle(pair, SETTINGS)
    kept = pair.connect(SETTINGS)
    open_txid = result_of(kept.opened).contract_txid
    pair.mine(1)
    m = pair.client_manager
    assert settled not in m._machines
    assert set(m._machines) == {open_txid} and set(m._timers) == {open_txid}
    # Asked about again, the store answers; following it again holds nothing afterwards.
    record = result_of(m.channel(settled))
    assert record.state is ClientChannelState.SETTLED
    m.follow(record)
    pair.clock.advance(0)
    assert settled not in m._machines
