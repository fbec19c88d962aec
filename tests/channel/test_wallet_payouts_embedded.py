"""Issue 10: the wallet owns the channel payouts. Fund, open, pay, settle (or let the channel
expire and the refund confirm), mine: the client's wallet balance is the funding minus what was
paid minus the fees, to the satoshi, and the server's wallet shows what it was paid, on a payout
script of its own for that settlement. On the embedded chain (Bitcoin Core's consensus engine);
the wallet then spends what it got back, and the node takes it.

The test clock starts three days before the real one, as in ``test_faults_embedded``.
"""

import time

import pytest
from bitcoin.core import CTransaction

from channel_pair import Pair, result_of
from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script
from twisted_paychan.chain.types import TxState
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.constants import REFUND_FEE
from twisted_paychan.wallet import MemoryWallet
from twisted_paychan.wallet.send import send_coins

SELECTORS = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}
COINBASE = 5_000_000_000
VALUE = 1_000_000


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


def _opened(tmp_path, version, paid):
    pair = Pair(chain_dir=tmp_path / "chain", start=int(time.time()) - 3 * 86400)
    assert result_of(pair.client_wallet.balance()).confirmed == COINBASE
    client = pair.connect(ClientSettings(channel_value=VALUE, versions=SELECTORS[version], fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(paid - 1000)  # plus the initial payment of 1000
    pair.pump()
    result_of(d)
    pair.mine(1)
    funded = [f for f in pair.client_wallet._funded.values()]
    assert len(funded) == 1
    return pair, client, txid, funded[0].funded.fee


def _spend_everything(pair, wallet):
    """What came back is spendable: swept to a stranger, accepted by the node, mined."""
    stranger = address_to_script(result_of(MemoryWallet(pair.chain).new_address()), REGTEST)
    funded = result_of(wallet.sweep(stranger, 1000))
    result_of(pair.chain.broadcast(funded.tx))
    pair.mine(1)
    assert result_of(pair.chain.tx_status(funded.txid)).state is TxState.CONFIRMED
    assert result_of(wallet.balance()).total == 0


def test_balance_after_settlement(tmp_path, version):
    paid = 30_000
    pair, client, txid, contract_fee = _opened(tmp_path, version, paid)
    d = client.settle()
    pair.pump()
    settlement = CTransaction.deserialize(result_of(d))
    pair.mine(1)
    assert result_of(pair.chain.tx_status(settlement.GetTxid())).state is TxState.CONFIRMED

    # The client: its change (output 0, P2PKH of its channel key) is a coin of its wallet.
    balance = result_of(pair.client_wallet.balance())
    assert (balance.confirmed, balance.unconfirmed) == (COINBASE - paid - contract_fee, 0)
    change = [c for c in result_of(pair.client_wallet.coins()) if c.value == VALUE - paid]
    assert len(change) == 1 and change[0].outpoint.txid == bytes(settlement.GetTxid())

    # The server: what it was paid less the settlement's fee, on a script for this channel only.
    settlement_fee = VALUE - sum(o.nValue for o in settlement.vout)
    payout = settlement.vout[1]
    assert payout.nValue == paid - settlement_fee
    assert bytes(payout.scriptPubKey) == result_of(pair.server_wallet.settlement_payout_script(txid))
    assert bytes(payout.scriptPubKey) != result_of(pair.server_wallet.payout_script())
    assert result_of(pair.server_wallet.balance()).confirmed == paid - settlement_fee

    _spend_everything(pair, pair.client_wallet)
    _spend_everything(pair, pair.server_wallet)
    pair.channels.stop()
    pair.chain.close()


def test_balance_after_refund(tmp_path, version):
    paid = 30_000
    pair, client, txid, contract_fee = _opened(tmp_path, version, paid)
    pair.channels.stop()  # the server is gone for good: no settlement ever
    client.disconnect()
    pair.pump()
    record = result_of(pair.client_store.client_channel(txid))
    result_of(pair.client_manager.start())
    while pair.clock.seconds() < record.expiry + 4 * 3600:
        pair.mine(1)
    assert result_of(pair.client_store.client_channel(txid)).state is ClientChannelState.REFUNDED
    # Everything locked comes back but the refund's fixed fee: what was paid was never settled.
    balance = result_of(pair.client_wallet.balance())
    assert (balance.confirmed, balance.unconfirmed) == (COINBASE - contract_fee - REFUND_FEE, 0)
    _spend_everything(pair, pair.client_wallet)
    pair.client_manager.stop()
    pair.chain.close()


def test_two_settlements_pay_two_scripts_one_balance(tmp_path):
    pair = Pair(chain_dir=tmp_path / "chain", start=int(time.time()) - 3 * 86400)
    settings = ClientSettings(channel_value=VALUE, versions=VersionSelector.VERSION_2, fee_rate=1000)
    scripts, fees = [], 0
    for _ in range(2):
        pair.client_key = result_of(pair.client_wallet.new_channel_key())
        client = pair.connect(settings)
        result_of(client.opened)
        d = client.pay(9000)
        pair.pump()
        result_of(d)
        d = client.settle()
        pair.pump()
        settlement = CTransaction.deserialize(result_of(d))
        scripts.append(bytes(settlement.vout[1].scriptPubKey))
        fees += VALUE - sum(o.nValue for o in settlement.vout)
        pair.mine(1)
    assert scripts[0] != scripts[1]
    assert result_of(pair.server_wallet.balance()).confirmed == 2 * 10_000 - fees
    pair.channels.stop()
    pair.chain.close()


def test_send_coins_from_channel_change(tmp_path):
    """``send_coins`` spends the settlement change with the rest, on the real node."""
    pair, client, txid, contract_fee = _opened(tmp_path, 2, 10_000)
    d = client.settle()
    pair.pump()
    result_of(d)
    pair.mine(1)
    stranger = result_of(MemoryWallet(pair.chain).new_address())
    sent = result_of(send_coins(pair.client_wallet, pair.chain, stranger, COINBASE - 20_000 - contract_fee, 1000))
    pair.mine(1)
    assert result_of(pair.chain.tx_status(sent.txid)).state is TxState.CONFIRMED
    spent = CTransaction.deserialize(result_of(pair.chain.get_transaction(sent.txid)))
    assert len(spent.vin) == 2  # the coinbase's change and the channel's change
    assert result_of(pair.client_wallet.balance()).confirmed == 10_000 - sent.fee
    pair.channels.stop()
    pair.chain.close()
