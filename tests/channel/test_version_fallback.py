"""Server-side version fallback (issue #15, spec §3.2/§3.3), in memory: a server that does not
speak the client's major answers with the highest one it speaks below it, and the client goes
on in that major on the same connection if its selector accepts it (bitcoinj's default
VERSION_2_ALLOW_1 does) or answers ERROR{NO_ACCEPTABLE_VERSION} (VERSION_2). A resume naming a
stored channel of another version is not resumed (§9.1 item 6, §13 item 27)."""

import time

from bitcoin.core import CTransaction

from channel_pair import Pair, failure_of, result_of
from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.errors import ChannelClosed, CloseReason, ErrorCode
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.wire import messages as m

MT = m.MessageType
V1_ONLY = ServerSettings(fee_rate=1000, versions=frozenset({1}))


def wire_messages(pair, direction):
    return [m.decode_message(raw) for d, raw in pair.wire if d == direction]


def test_2_or_1_client_opens_pays_and_settles_in_v1_with_a_v1_only_server(tmp_path):
    """bitcoinj's default client (VERSION_2_ALLOW_1) asks for 2; the v1-only server answers
    SERVER_VERSION{1}; the channel is opened, paid and settled in v1 on that one connection, on
    the embedded chain (Bitcoin Core's consensus engine)."""
    pair = Pair(V1_ONLY, chain_dir=tmp_path / "chain", start=int(time.time()) - 3 * 86400)
    settings = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2_ALLOW_1, fee_rate=1000)
    client = pair.connect(settings)
    opened = result_of(client.opened)
    txid = opened.contract_txid
    assert not opened.resumed and client.machine.major == 1
    c2s, s2c = wire_messages(pair, "c2s"), wire_messages(pair, "s2c")
    assert c2s[0].type == MT.CLIENT_VERSION and c2s[0].client_version.major == 2
    assert s2c[0].type == MT.SERVER_VERSION and s2c[0].server_version.major == 1
    assert [msg.type for msg in s2c[:3]] == [MT.SERVER_VERSION, MT.INITIATE, MT.RETURN_REFUND]  # v1's handshake
    assert MT.ERROR not in [msg.type for msg in c2s + s2c]
    record = result_of(pair.server_store.server_channel(txid))
    assert record.version == 1 and result_of(pair.client_store.client_channel(txid)).version == 1
    contract = CTransaction.deserialize(record.contract)
    script = bytes(contract.vout[0].scriptPubKey)
    assert script == ChannelScript(1, record.client_key, record.server_key, record.expiry).script_pubkey
    assert script[0] == 0x52 and script[-1] == 0xAE  # bare 2-of-2 multisig: v1
    for _ in range(5):
        d = client.pay(1000)
        pair.pump()
        assert result_of(d).amount == 1000
    assert result_of(pair.server_store.server_channel(txid)).best_value == 6000
    d = client.settle()
    pair.pump()
    settlement = result_of(d)
    assert pair.server_closed is CloseReason.CLIENT_REQUESTED_CLOSE
    assert consensus.verify_input(settlement, 0, script, contract.vout[0].nValue)
    pair.mine(1)
    assert result_of(pair.chain.tx_status(txid)).state is TxState.CONFIRMED
    assert result_of(pair.chain.tx_status(CTransaction.deserialize(settlement).GetTxid())).state is TxState.CONFIRMED
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.SETTLED


def test_v2_only_client_answers_the_lower_major_with_no_acceptable_version():
    """§3.3 step 2: a VERSION_2 client answered with major 1 sends ERROR{NO_ACCEPTABLE_VERSION}
    and closes; the server closes on that ERROR; no channel is opened."""
    pair = Pair(V1_ONLY)
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    f = failure_of(client.opened)
    assert f.check(ChannelClosed) and f.value.reason is CloseReason.NO_ACCEPTABLE_VERSION
    s2c, c2s = wire_messages(pair, "s2c"), wire_messages(pair, "c2s")
    assert s2c[0].type == MT.SERVER_VERSION and s2c[0].server_version.major == 1
    assert [msg.type for msg in c2s] == [MT.CLIENT_VERSION, MT.ERROR]
    assert ErrorCode(c2s[1].error.code) is ErrorCode.NO_ACCEPTABLE_VERSION
    assert pair.client_closed is CloseReason.NO_ACCEPTABLE_VERSION
    assert pair.server_closed is CloseReason.REMOTE_SENT_ERROR
    assert result_of(pair.server_store.server_channels()) == []
    assert result_of(pair.client_store.client_channels()) == []


def stored_v2_channel_then_v1_only_server():
    """A v2 channel opened, paid and left (resumable); then the server restarts speaking only v1."""
    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(5000)
    pair.pump()
    result_of(d)
    client.disconnect()
    pair.pump()
    pair.channels.stop()
    pair.server_settings = V1_ONLY
    pair.channels = ServerChannelManager(pair.server_wallet, pair.chain, pair.server_store, V1_ONLY, pair.clock)
    result_of(pair.channels.start())
    return pair, txid


def test_resume_of_a_v2_channel_by_a_bitcoinj_client_gets_a_new_v1_channel():
    """A stock bitcoinj 2-or-1 client offers its stored v2 channel asking for 2. The v1-only
    server answers SERVER_VERSION{1}, looks the channel up as usual and does not resume it in
    v1: INITIATE follows (the client goes on with a new v1 channel). The stored v2 channel is
    left as it was."""
    pair, txid = stored_v2_channel_then_v1_only_server()
    before = result_of(pair.server_store.server_channel(txid))
    sent, closed = [], []
    connection = pair.channels.connection(None, sent.append, closed.append)
    connection.message_received(m.client_version(2, previous_contract_hash=bytes(reversed(txid))))
    pair.clock.advance(0)
    assert [msg.type for msg in sent] == [MT.SERVER_VERSION, MT.INITIATE] and not closed
    assert sent[0].server_version.major == 1
    assert connection.machine.major == 1 and connection.machine.record is None
    after = result_of(pair.server_store.server_channel(txid))
    assert after.state is ServerChannelState.OPEN and after.best_value == before.best_value == 6000
    assert after.version == 2


def test_our_2_or_1_client_does_not_resume_its_v2_channel_in_v1():
    """Our client offers a stored channel only in its own version and refuses to resume it in
    another (§9.1 item 6 [Recommended]): answered with major 1 it sends NO_ACCEPTABLE_VERSION
    and keeps the record (``net.client.connect`` then reconnects asking for v1, tested over
    TCP). The server, which did not resume it either, leaves it as it was."""
    pair, txid = stored_v2_channel_then_v1_only_server()
    record = result_of(pair.client_store.client_channel(txid))
    settings = ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2_ALLOW_1, fee_rate=1000)
    client = pair.connect(settings, resume=record)
    f = failure_of(client.opened)
    assert f.check(ChannelClosed) and f.value.reason is CloseReason.NO_ACCEPTABLE_VERSION
    assert pair.server_closed is CloseReason.REMOTE_SENT_ERROR
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.OPEN
    server_record = result_of(pair.server_store.server_channel(txid))
    assert server_record.state is ServerChannelState.OPEN and server_record.best_value == 6000
