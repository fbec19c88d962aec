"""Contract-failed records do not pile up (issue #14 item 3): the manager prunes a channel whose
contract failed, once the grace period is over and only if the chain does not know the contract."""

from twisted.internet import defer

from channel_pair import Pair, result_of
from twisted_paychan.chain.types import TxState, TxStatus
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState

S = ServerChannelState


def record(n, state=S.CONTRACT_FAILED, **kw):
    fields = dict(contract_txid=bytes([n]) * 32, version=2, contract=b"\x01" * 64, value=1_000_000,
                  expiry=1_800_000_000, server_key=b"\x02" * 33, client_key=b"\x03" * 33, best_value=1000,
                  best_signature=b"initial", state=state, created_at=0, updated_at=0,
                  note="contract rejected by the node: bad-txns-inputs-missingorspent")
    fields.update(kw)
    return ServerChannelRecord(**fields)


def stored(pair):
    return {r.contract_txid[0] for r in result_of(pair.server_store.server_channels())}


def test_failed_unknown_contracts_are_pruned_after_the_grace_period_only():
    pair = Pair()
    grace = pair.channels.policy.prune_after
    now = int(pair.clock.seconds())
    result_of(pair.server_store.add_server_channel(record(1, created_at=now, updated_at=now)))
    later = now + int(grace)
    result_of(pair.server_store.add_server_channel(record(2, created_at=now, updated_at=later)))  # failed later
    result_of(pair.server_store.add_server_channel(record(3, state=S.SETTLED, settlement_tx=b"tx")))
    # Failed after it was accepted: it may hold payments, it is the operator's.
    result_of(pair.server_store.add_server_channel(record(6, created_at=now, updated_at=now,
                                                          note="contract not confirmed after 6 h (unknown)")))
    pair.clock.advance(grace + 1)
    assert result_of(pair.channels.prune()) == 1
    assert stored(pair) == {2, 3, 6}


def test_a_contract_the_chain_knows_is_kept():
    pair = Pair()
    now = int(pair.clock.seconds())
    known = record(4, created_at=now, updated_at=now)
    pair.chain.tx_status = lambda txid: defer.succeed(TxStatus(TxState.MEMPOOL))
    result_of(pair.server_store.add_server_channel(known))
    pair.clock.advance(pair.channels.policy.prune_after + 1)
    assert result_of(pair.channels.prune()) == 0
    assert stored(pair) == {4}


def test_the_manager_prunes_on_its_timer():
    pair = Pair()
    policy = pair.channels.policy
    result_of(pair.channels.start())
    now = int(pair.clock.seconds())
    result_of(pair.server_store.add_server_channel(record(5, created_at=now, updated_at=now)))
    pair.clock.advance(policy.prune_after - policy.prune_interval + 1)
    assert stored(pair) == {5}
    pair.clock.advance(policy.prune_interval)
    assert stored(pair) == set()


def test_a_contract_the_node_refused_leaves_no_record_after_the_grace_period():
    from channel_pair import failure_of
    from twisted_paychan.chain.types import BroadcastRejected
    from twisted_paychan.channel.errors import ChannelClosed
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector

    pair = Pair()
    result_of(pair.channels.start())
    pair.chain.broadcast = lambda raw: defer.fail(BroadcastRejected("bad-txns-inputs-missingorspent"))
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    assert failure_of(client.opened).check(ChannelClosed)
    (failed,) = result_of(pair.server_store.server_channels())
    assert failed.state is S.CONTRACT_FAILED and failed.best_signature is not None  # the initial payment
    policy = pair.channels.policy
    pair.clock.advance(policy.prune_after - policy.prune_interval)
    assert len(result_of(pair.server_store.server_channels())) == 1  # kept through the grace
    pair.clock.advance(2 * policy.prune_interval)
    assert result_of(pair.server_store.server_channels()) == []
