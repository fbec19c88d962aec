"""send_coins: withdrawing an amount or everything, checked by the judge and the MemoryChain's
mempool rules; the errors a person can fix, one line each."""

from __future__ import annotations

from typing import Any

import pytest
from bitcoin.core import CTransaction
from twisted.internet import defer
from twisted.internet.task import Clock

from twisted_paychan.bitcoin.addresses import REGTEST, address_to_script, hash160, p2pkh_script
from twisted_paychan.bitcoin.consensus import verify_input
from twisted_paychan.chain.interfaces import InsufficientFunds
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.chain.types import BroadcastRejected
from twisted_paychan.wallet import MemoryWallet
from twisted_paychan.wallet.send import SendError, SendResult, send_coins
from wallet_conformance import failure_of, result

MAINNET_ADDRESS = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"


@pytest.fixture
def setup() -> tuple[MemoryChain, MemoryWallet, str]:
    clock = Clock()
    clock.advance(1_700_000_000)
    chain = MemoryChain(clock)
    wallet = MemoryWallet(chain)
    chain.credit(address_to_script(result(wallet.new_address()), REGTEST), 600_000)
    # A client's channel change: spent by send like any other coin.
    key = result(wallet.new_channel_key()).public_key
    chain.credit(p2pkh_script(hash160(key)), 400_000)
    chain.mine()
    destination = result(MemoryWallet(chain).new_address())
    return chain, wallet, destination


def _judge(chain: MemoryChain, raw: bytes) -> None:
    tx = CTransaction.deserialize(raw)
    for i, txin in enumerate(tx.vin):
        prev = CTransaction.deserialize(result(chain.get_transaction(bytes(txin.prevout.hash))))
        out = prev.vout[txin.prevout.n]
        assert verify_input(raw, i, bytes(out.scriptPubKey), out.nValue)


def test_send_an_amount(setup: Any) -> None:
    chain, wallet, destination = setup
    sent: SendResult = result(send_coins(wallet, chain, destination, 700_000, 2000))
    raw = result(chain.get_transaction(sent.txid))
    _judge(chain, raw)
    tx = CTransaction.deserialize(raw)
    assert sent.amount == 700_000 and tx.vout[0].nValue == 700_000
    assert bytes(tx.vout[0].scriptPubKey) == address_to_script(destination, REGTEST)
    chain.mine()
    assert result(wallet.balance()).confirmed == 1_000_000 - 700_000 - sent.fee


def test_send_all(setup: Any) -> None:
    chain, wallet, destination = setup
    sent = result(send_coins(wallet, chain, destination, None, 1000))
    _judge(chain, result(chain.get_transaction(sent.txid)))
    assert sent.amount + sent.fee == 1_000_000
    chain.mine()
    assert result(wallet.balance()).total == 0


def test_errors_are_one_line(setup: Any) -> None:
    chain, wallet, destination = setup
    f = failure_of(send_coins(wallet, chain, MAINNET_ADDRESS, 1000, 1000))
    assert f.check(SendError) and "not for regtest" in str(f.value) and "\n" not in str(f.value)
    f = failure_of(send_coins(wallet, chain, "nonsense", 1000, 1000))
    assert f.check(SendError) and str(f.value).startswith("bad address 'nonsense'")
    f = failure_of(send_coins(wallet, chain, destination, 100, 1000))
    assert f.check(SendError) and "dust" in str(f.value)
    f = failure_of(send_coins(wallet, chain, destination, 0, 1000))
    assert f.check(SendError)
    f = failure_of(send_coins(wallet, chain, destination, 2_000_000, 1000))
    assert f.check(InsufficientFunds)
    assert str(f.value).startswith("insufficient funds: need ") and "have 1000000 sat" in str(f.value)
    assert wallet.reserved_transactions() == []


def test_refused_broadcast_gives_the_coins_back(setup: Any) -> None:
    chain, wallet, destination = setup

    def refuse(tx: bytes) -> defer.Deferred[bytes]:
        return defer.fail(BroadcastRejected("node says no"))

    chain.broadcast = refuse  # type: ignore[method-assign]
    f = failure_of(send_coins(wallet, chain, destination, 50_000, 1000))
    assert f.check(BroadcastRejected)
    assert wallet.reserved_transactions() == []
    assert result(wallet.balance()).confirmed == 1_000_000
