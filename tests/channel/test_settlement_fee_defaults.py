"""The server's default fee rate can settle every channel its own defaults allow, and a
settlement b cannot pay says what it would have cost (issue 10)."""

from __future__ import annotations

from channel_pair import Pair, failure_of, result_of
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.channel.settings import ClientSettings, ServerSettings


def test_a_minimum_channel_paid_only_its_initial_payment_settles_with_the_defaults() -> None:
    defaults = ServerSettings()
    pair = Pair(defaults)
    client = pair.connect(ClientSettings(channel_value=defaults.min_channel_size, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    assert result_of(pair.server_store.server_channel(txid)).best_value == defaults.min_payment
    d = client.settle()
    pair.pump()
    assert isinstance(result_of(d), bytes)
    pair.mine(1)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLED


def test_an_unaffordable_settlement_names_the_real_fee() -> None:
    pair = Pair(ServerSettings(fee_rate=100_000))
    client = pair.connect(ClientSettings(channel_value=1_000_000, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.settle()
    pair.pump()
    failure = failure_of(d)
    assert failure.check(ChannelClosed) and failure.value.reason is CloseReason.REMOTE_SENT_ERROR
    record = result_of(pair.server_store.server_channel(txid))
    assert record.state is ServerChannelState.STUCK
    # About 340 bytes at 100 sat/byte: the fee is named, with its rate and what b is.
    note = record.note
    fee = int(note.split("settlement fee ")[1].split(" sat")[0])
    assert 30_000 < fee < 40_000
    assert note == f"settlement fee {fee} sat (at 100000 sat/kB) exceeds the 1000 sat the channel pays the server"
    assert str(fee) in failure.value.detail
    # The operator's settle may fall back to the 1000 sat/kB floor, which b can pay.
    assert isinstance(result_of(pair.channels.settle(txid)), bytes)
