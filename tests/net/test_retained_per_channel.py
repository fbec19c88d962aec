"""Issue #21's regression test: what a full channel cycle leaves behind, counted.

Channels are opened, paid three times and settled by the client's request on the embedded
chain (the real node: kernel, mempool, index), both managers in one process on a
``task.Clock``. After a warm-up round, every further round must leave the same number of live
objects of each kind that belongs to a channel (machines, connections, watches, timers,
Deferreds, mempool entries) as before it, and the node's in-memory index must hold headers
only. Counts, not RSS: deterministic, and it names what leaked.

The stores and wallets of this pair are the in-memory ones, which keep every record and key
by design; they are not counted.
"""

from __future__ import annotations

import collections
import gc
import sys
from pathlib import Path

import pytest
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import LimitedHistoryLogObserver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channel"))

from channel_pair import Pair, full_cycle, result_of  # noqa: E402

from twisted_paychan.chain.watchlists import Watch  # noqa: E402
from twisted_paychan.channel.client_lifecycle import ClientLifecycle  # noqa: E402
from twisted_paychan.channel.server_lifecycle import ServerLifecycle  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings, VersionSelector  # noqa: E402
from twisted_paychan.net.client_channel import ClientChannel  # noqa: E402
from twisted_paychan.net.server_channel import ServerChannel  # noqa: E402

SETTINGS = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)

#: The kinds of object a channel may hold while it lives; none may outlive it.
COUNTED = (ClientLifecycle, ServerLifecycle, ClientChannel, ServerChannel, Watch, DelayedCall, Deferred)


def _round(pair: Pair, channels: int) -> None:
    for _ in range(channels):
        full_cycle(pair, SETTINGS)
    pair.mine(6)
    # The last connection objects stay referenced by the pair until the next connect.
    pair.server = pair.client = None


def _census(pair: Pair) -> dict[str, int]:
    gc.collect()
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        if isinstance(obj, COUNTED):
            counts[type(obj).__name__] += 1
    node = pair.chain.node
    counts["mempool entries"] = len(node._mempool.entries)
    counts["mempool scripts"] = len(node._mempool._paying)
    counts["mempool spends"] = len(node._mempool.spends)
    counts["manager channels"] = len(pair.channels._channels)
    counts["settling channels"] = len(pair.channels._settling)  # what a block looks at
    counts["client machines"] = len(pair.client_manager._machines)
    counts["spend watches"] = pair.chain._watchers.watching
    counts["timers"] = len(pair.clock.getDelayedCalls())
    return dict(counts)


@pytest.fixture
def no_log_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until logging begins (twistd begins it; a test process never does), Twisted keeps the
    last 64 Ki log events, and an event keeps its ``log_source``, a connection object, alive:
    not kept while the census runs, so what is counted is what the code keeps."""
    monkeypatch.setattr(LimitedHistoryLogObserver, "__call__", lambda self, event: None)


def test_a_finished_channel_leaves_no_object_behind(tmp_path: Path, no_log_history: None) -> None:
    pair = Pair(funds=5_000_000_000, chain_dir=tmp_path / "chain")
    result_of(pair.channels.start())
    _round(pair, 3)  # warm-up: caches, the first connection's lazy state
    baseline = _census(pair)
    blocks_before = len(pair.chain.node._index.blocks)
    for _ in range(2):
        _round(pair, 4)
        assert _census(pair) == baseline
    assert baseline["manager channels"] == baseline["client machines"] == baseline["spend watches"] == 0
    assert baseline["settling channels"] == 0
    # The index keeps one header a block in memory; transactions, spends and coins are on disk.
    index = pair.chain.node._index
    assert len(index.blocks) == blocks_before + 12
    assert not [name for name, value in vars(index).items() if isinstance(value, dict) and name != "_height_of"]
    pair.channels.stop()
