"""ClientChannelManager: the one place the client's channels are asked about. It lists the stored
channels, hands out the live connection of a channel, tells subscribers what happens to each
channel, and stores every change by compare-and-set."""

from __future__ import annotations

from channel_pair import Pair, result_of
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector

SETTINGS = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000)


def test_list_channel_connection_and_events():
    pair = Pair()
    manager = pair.client_manager
    events: list[lc.ChannelEvent] = []
    unsubscribe = manager.subscribe(events.append)
    client = pair.connect(SETTINGS)
    txid = result_of(client.opened).contract_txid
    assert manager.connection(txid) is client
    assert [r.contract_txid for r in result_of(manager.list_channels())] == [txid]
    d = client.settle()
    pair.pump()
    settlement = result_of(d)
    record = result_of(manager.channel(txid))
    assert record.state is ClientChannelState.SETTLED and record.close_tx == settlement
    # Our server broadcasts before its CLOSE: whichever is seen first is recorded, once.
    assert [(type(e), e.tx, e.note) for e in events] == [(lc.ChannelSettled, settlement, "")]
    assert manager.connection(txid) is None  # the connection is over
    unsubscribe()
    manager.stop()


def test_start_follows_stored_channels_and_stop_cancels_everything():
    pair = Pair()
    client = pair.connect(SETTINGS)
    txid = result_of(client.opened).contract_txid
    client.disconnect()
    pair.pump()
    pair.channels.stop()  # no server settles it
    manager = pair.client_manager
    result_of(manager.start())
    assert manager._timers and manager._watches and manager._block_watch is not None
    manager.stop()
    assert not manager._timers and not manager._watches and manager._block_watch is None
    assert result_of(manager.channel(txid)).state is ClientChannelState.OPEN


def test_a_second_writer_is_a_conflict_not_a_lost_update():
    """Two managers over one store (as two processes on one database would be): the second
    finds the state changed under it and adopts the stored record instead of overwriting."""
    from twisted_paychan.net.client_manager import ClientChannelManager

    pair = Pair()
    client = pair.connect(SETTINGS)
    txid = result_of(client.opened).contract_txid
    client.disconnect()
    pair.pump()
    pair.channels.stop()  # no server settles it on the chain
    other = ClientChannelManager(pair.client_wallet, pair.chain, pair.client_store, pair.clock)
    events: list[lc.ChannelEvent] = []
    other.subscribe(events.append)
    result_of(other.start())
    result_of(pair.client_store.transition_client(txid, ClientChannelState.OPEN, ClientChannelState.SETTLED,
                                                  close_tx=b"elsewhere", updated_at=1))
    record = result_of(pair.client_store.client_channel(txid))
    pair.clock.advance(record.expiry + 300 - pair.clock.seconds())  # the refund falls due: OPEN -> EXPIRING
    assert any(isinstance(e, lc.StoreTrouble) for e in events)
    got = result_of(pair.client_store.client_channel(txid))
    assert got.state is ClientChannelState.SETTLED and got.close_tx == b"elsewhere"
    assert not other._timers  # nothing more to do for a settled channel
    other.stop()
    assert pair.client_closed is CloseReason.CONNECTION_CLOSED
