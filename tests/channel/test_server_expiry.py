"""The server settles every channel before its client's refund can be valid (spec §10.2),
from a timer on the injected clock that survives restarts and failures."""

from dataclasses import replace

from bitcoin.core import CTransaction

from channel_pair import Pair, result_of
from twisted_paychan.bitcoin import consensus
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.server_manager import ServerChannelManager
from twisted_paychan.channel.records import ServerChannelState


def opened_and_paid(version=2, watched=None):
    pair = Pair()
    if watched is not None:  # record the server's spend watches: outpoint -> callbacks
        real_watch = pair.chain.watch_spend

        def recording(outpoint, callback):
            watched.setdefault(outpoint, []).append(callback)
            return real_watch(outpoint, callback)

        pair.chain.watch_spend = recording
    sel = VersionSelector.VERSION_1 if version == 1 else VersionSelector.VERSION_2
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=sel, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(50_000)
    pair.pump()
    result_of(d)
    pair.chain.mine(1)  # the contract confirms (one that does not is the next test file's case)
    pair.clock.advance(0)
    return pair, client, txid


def test_settles_at_expiry_minus_offset_and_records_confirmation():
    pair, client, txid = opened_and_paid()
    record = result_of(pair.server_store.server_channel(txid))
    due = record.expiry - 7200
    pair.clock.advance(due - pair.clock.seconds() - 1)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.OPEN
    pair.clock.advance(1)
    pair.pump()
    # The connected client was told (plain CLOSE), then the settlement went out.
    assert pair.server_closed is CloseReason.SERVER_REQUESTED_CLOSE
    assert pair.client_closed is CloseReason.SERVER_REQUESTED_CLOSE
    settling = result_of(pair.server_store.server_channel(txid))
    assert settling.state is ServerChannelState.SETTLING
    contract = CTransaction.deserialize(settling.contract)
    assert consensus.verify_input(settling.settlement_tx, 0, bytes(contract.vout[0].scriptPubKey),
                                  contract.vout[0].nValue)
    pair.chain.mine(1)
    pair.clock.advance(0)
    pair.clock.advance(0)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLED


def test_restart_rearms_and_fires_at_once_when_past():
    pair, client, txid = opened_and_paid(version=1)
    client.disconnect()
    pair.pump()
    pair.channels.stop()
    record = result_of(pair.server_store.server_channel(txid))
    pair.clock.advance(record.expiry - pair.clock.seconds())  # the server was down past E - 7200
    restarted = ServerChannelManager(pair.server_wallet, pair.chain, pair.server_store, pair.server_settings, pair.clock)
    result_of(restarted.start())
    pair.clock.advance(0)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLING


def test_failing_settlement_is_retried_not_lost():
    pair, client, txid = opened_and_paid()
    client.disconnect()
    pair.pump()
    from twisted.internet import defer

    calls = []
    real_broadcast = pair.chain.broadcast

    def flaky(raw):
        if CTransaction.deserialize(raw).vin[0].prevout.hash == txid:  # the settlement
            calls.append(raw)
            if len(calls) == 1:
                return defer.fail(ConnectionRefusedError("node unreachable"))
        return real_broadcast(raw)

    pair.chain.broadcast = flaky
    record = result_of(pair.server_store.server_channel(txid))
    pair.clock.advance(record.expiry - 7200 - pair.clock.seconds())
    stuck = result_of(pair.server_store.server_channel(txid))
    assert stuck.state is ServerChannelState.STUCK and "node unreachable" in stuck.note
    pair.clock.advance(pair.channels.retry_interval)
    assert len(calls) == 2
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLING


def test_double_spent_contract_stops_payments():
    """A spend of one of the contract's inputs by another transaction marks the channel
    CONTRACT_FAILED; the next payment is refused with BAD_TRANSACTION (§7.3 check 5)."""
    from bitcoin.core import CTransaction

    from channel_pair import failure_of
    from twisted_paychan.chain.types import OutPoint, SpendEvent, TxState, TxStatus
    from twisted_paychan.channel.errors import ChannelClosed

    watched = {}
    pair, client, txid = opened_and_paid(watched=watched)
    record = result_of(pair.server_store.server_channel(txid))
    contract = CTransaction.deserialize(record.contract)
    first = contract.vin[0].prevout
    point = OutPoint(bytes(first.hash), first.n)
    assert watched[point]  # the server watches the contract's inputs
    # What the chain reports when another transaction spends the contract's coin.
    event = SpendEvent(point, b"\x77" * 32, b"conflict", TxStatus(TxState.CONFIRMED, 1))
    for callback in watched[point]:
        callback(event)
    failed = result_of(pair.server_store.server_channel(txid))
    assert failed.state is ServerChannelState.CONTRACT_FAILED and "double-spent" in failed.note
    d = client.pay(1000)
    pair.pump()
    assert failure_of(d).check(ChannelClosed)
    assert pair.server_closed is CloseReason.REMOTE_SENT_INVALID_MESSAGE
    assert result_of(pair.server_store.server_channel(txid)).best_value == record.best_value


def test_contract_that_never_confirms_stops_payments():
    """§13 item 4 / issue: a contract still unconfirmed after the timeout marks the channel
    CONTRACT_FAILED with the reason; payments are then refused (BAD_TRANSACTION)."""
    from channel_pair import failure_of
    from twisted_paychan.channel.errors import ChannelClosed

    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid  # in the mempool; nobody mines
    pair.clock.advance(pair.channels.contract_confirm_timeout - 1)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.OPEN
    pair.clock.advance(1)
    failed = result_of(pair.server_store.server_channel(txid))
    assert failed.state is ServerChannelState.CONTRACT_FAILED and "not confirmed" in failed.note
    d = client.pay(1000)
    pair.pump()
    assert failure_of(d).check(ChannelClosed)


def test_confirmed_contract_keeps_its_channel_open():
    pair, client, txid = opened_and_paid()
    pair.clock.advance(pair.channels.contract_confirm_timeout)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.OPEN


def _fee(pair, raw):
    """A settlement's fee: the contract output it spends minus its outputs."""
    tx = CTransaction.deserialize(raw)
    contract_txid = bytes(tx.vin[0].prevout.hash)
    contract = CTransaction.deserialize(result_of(pair.server_store.server_channel(contract_txid)).contract)
    return contract.vout[0].nValue - sum(o.nValue for o in tx.vout)


def test_settlement_refused_as_too_cheap_is_retried_at_a_higher_rate():
    """A node that refuses the settlement's fee (a real one in a busy mempool): the channel is
    kept STUCK with the reason, and the retry pays twice the rate."""
    from twisted.internet import defer

    from twisted_paychan.chain.types import BroadcastRejected

    pair, client, txid = opened_and_paid()
    client.disconnect()
    pair.pump()
    seen = []
    real_broadcast = pair.chain.broadcast

    def picky(raw):
        if CTransaction.deserialize(raw).vin[0].prevout.hash == txid:
            seen.append(raw)
            if len(seen) == 1:
                return defer.fail(BroadcastRejected("min relay fee not met", -26))
        return real_broadcast(raw)

    pair.chain.broadcast = picky
    record = result_of(pair.server_store.server_channel(txid))
    pair.clock.advance(record.expiry - 7200 - pair.clock.seconds())
    stuck = result_of(pair.server_store.server_channel(txid))
    assert stuck.state is ServerChannelState.STUCK and "fee" in stuck.note
    pair.clock.advance(pair.channels.retry_interval)
    assert len(seen) == 2
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLING
    assert _fee(pair, seen[1]) > _fee(pair, seen[0])


def test_expiry_settlement_falls_back_to_the_floor_rate():
    """At expiry, a settlement b cannot pay at the configured rate is made at the 1000 sat/kB
    floor instead: the server gets what it can before the client's refund takes everything."""
    from twisted_paychan.channel.settings import ServerSettings

    pair = Pair(ServerSettings(fee_rate=100_000))
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(2000)  # b = 3000: too little for 100,000 sat/kB, enough at the floor
    pair.pump()
    result_of(d)
    pair.chain.mine(1)
    client.disconnect()
    pair.pump()
    record = result_of(pair.server_store.server_channel(txid))
    pair.clock.advance(record.expiry - 7200 - pair.clock.seconds())
    settled = result_of(pair.server_store.server_channel(txid))
    assert settled.state is ServerChannelState.SETTLING
    assert _fee(pair, settled.settlement_tx) < 1000


def test_settlement_dropped_by_the_node_is_offered_again_until_it_confirms():
    pair, client, txid = opened_and_paid()
    result_of(pair.channels.start())  # the server's block watch
    d = client.settle()
    pair.pump()
    settlement = result_of(d)
    settlement_txid = CTransaction.deserialize(settlement).GetTxid()
    # The node forgets it (eviction, or a restart without its mempool).
    pair.chain._mempool.remove([settlement_txid])
    pair.chain._txs.pop(settlement_txid, None)
    pair.chain.mine(1)  # a block without it; the server offers it again
    pair.clock.advance(0)
    pair.clock.advance(0)
    assert settlement_txid in pair.chain.mempool
    pair.chain.mine(1)
    pair.clock.advance(0)
    pair.clock.advance(0)
    assert result_of(pair.server_store.server_channel(txid)).state is ServerChannelState.SETTLED
    pair.channels.stop()
