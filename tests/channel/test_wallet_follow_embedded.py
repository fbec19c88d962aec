"""Issue #21: a reorganisation undoes a settlement the server's wallet had credited. On the
embedded node (Bitcoin Core's consensus engine): a channel settles, the block holding the
settlement is replaced by a longer fork without it, and the wallet, which follows the chain
block by block, takes the coin back out of its confirmed balance (the settlement returns to the
mempool: unconfirmed) until a block confirms it again. Its coins stay exactly what a scan of the
node says, and no scan is made for any of it."""

import time

from bitcoin.core import CTransaction

from channel_pair import Pair, result_of
from twisted_paychan.chain.embedded import miner
from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND
from twisted_paychan.channel.settings import ClientSettings, VersionSelector


def _fork(node, depth):
    parent = node.block_hash_at(node.height - depth)
    for height in range(node.height - depth + 1, node.height + 2):
        block = miner.build_block(parent, height, node.next_block_time() + 1, ANYONE_CAN_SPEND, [], 0, tag=b"fork")
        node.submit_block(block.raw)
        parent = block.block_hash


def test_a_reorganisation_undoes_a_credited_settlement(tmp_path):
    pair = Pair(chain_dir=tmp_path / "chain", start=int(time.time()) - 3 * 86400)
    wallet = pair.server_wallet
    wallet.start()
    pair.clock.advance(0)
    scans = wallet.scans
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    result_of(client.opened)
    d = client.pay(29_000)
    pair.pump()
    result_of(d)
    d = client.settle()
    pair.pump()
    settlement = CTransaction.deserialize(result_of(d))
    paid = settlement.vout[1].nValue
    pair.mine(1)
    pair.clock.advance(0)
    balance = result_of(wallet.balance())
    assert (balance.confirmed, balance.unconfirmed) == (paid, 0)

    _fork(pair.chain.node, 1)
    pair.clock.advance(0)
    balance = result_of(wallet.balance())
    assert (balance.confirmed, balance.unconfirmed) == (0, paid)
    script = bytes(settlement.vout[1].scriptPubKey)
    assert [u.outpoint for u in result_of(wallet.coins())] == []  # unconfirmed and not ours to spend yet
    assert [(u.value, u.height) for u in result_of(pair.chain.unspent_outputs(script))] == [(paid, None)]

    pair.mine(1)
    pair.clock.advance(0)
    balance = result_of(wallet.balance())
    assert (balance.confirmed, balance.unconfirmed) == (paid, 0)
    [coin] = result_of(wallet.coins())
    assert [coin] == result_of(pair.chain.unspent_outputs(script))
    assert wallet.scans == scans
    pair.channels.stop()
    pair.chain.close()
