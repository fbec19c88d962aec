"""Stock bitcoinj loses its last message when it closes (spec §1.4): a client that asked to
settle sees EOF instead of CLOSE{settlement}, and after an exhausting payment may see neither
the PAYMENT_ACK nor the CLOSE. Our client treats EOF as the normal end and learns the
settlement from the chain."""

import pytest
from twisted.internet import defer

from channel_pair import Pair, result_of
from twisted_paychan.channel.client_lifecycle import EXHAUSTED_NOTE
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.net.client_channel import SettledOnChain
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.wire.messages import MessageType, decode_message


class LosesFinalMessages(Pair):
    """The server's frames written right before it closes never reach the client."""

    def _server_close(self, reason):
        super()._server_close(reason)
        while self.to_client and decode_message(self.to_client[-1]).type in (MessageType.CLOSE,
                                                                             MessageType.PAYMENT_ACK):
            self.to_client.pop()


def test_eof_after_close_settlement_learned_from_chain():
    pair = LosesFinalMessages()
    client = pair.connect(ClientSettings(channel_value=1_000_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(5000)
    pair.pump()
    result_of(d)
    settled = client.settle()
    pair.pump()
    assert pair.client_closed is CloseReason.CLIENT_REQUESTED_CLOSE
    pair.clock.advance(0)
    outcome = result_of(settled)
    assert isinstance(outcome, SettledOnChain)
    record = result_of(pair.client_store.client_channel(txid))
    assert record.state is ClientChannelState.SETTLED and record.close_tx == outcome.tx
    assert record.note == ""  # it pays our change in full


class LosesOnlyClose(Pair):
    """The server's PAYMENT_ACK arrives; its CLOSE, written right before it closes, does not."""

    def _server_close(self, reason):
        super()._server_close(reason)
        while self.to_client and decode_message(self.to_client[-1]).type is MessageType.CLOSE:
            self.to_client.pop()


class CloseOvertakesAck(Pair):
    """The server's CLOSE reaches us before the PAYMENT_ACK it queued first (§7.3 step 4)."""

    def _server_close(self, reason):
        super()._server_close(reason)
        types = [decode_message(raw).type for raw in self.to_client]
        if types[-2:] == [MessageType.PAYMENT_ACK, MessageType.CLOSE]:
            self.to_client[-2], self.to_client[-1] = self.to_client[-1], self.to_client[-2]


def _exhaust(pair, version):
    """Open a 100000 sat channel (1000 sat opening payment) and pay the rest in one payment."""
    client = pair.connect(ClientSettings(channel_value=100_000, versions=version, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(99_000)  # leaves 0: the server settles at once and closes
    pair.pump()
    return client, txid, d


@pytest.mark.parametrize("pair_class, from_chain", [
    pytest.param(LosesFinalMessages, True, id="bitcoinj-loses-ack-and-close"),
    pytest.param(LosesOnlyClose, True, id="close-lost"),
    pytest.param(CloseOvertakesAck, False, id="close-overtakes-ack"),
    pytest.param(Pair, False, id="ack-then-close"),
])
@pytest.mark.parametrize("version", [VersionSelector.VERSION_1, VersionSelector.VERSION_2])
def test_exhausting_payment_is_paid_and_settled(pair_class, from_chain, version):
    """§7.3 step 4: the exhausting payment counts as paid however the connection ends (EOF, the
    CLOSE lost, the CLOSE before the ack, or both in order); the close reason is always
    CHANNEL_EXHAUSTED, settle() fires with the server's settlement, and the stored channel ends
    SETTLED with it, learned from the chain when the CLOSE never came."""
    pair = pair_class()
    client, txid, d = _exhaust(pair, version)
    assert result_of(d).amount == 99_000
    assert pair.client_closed is CloseReason.CHANNEL_EXHAUSTED and client.exhausted
    pair.clock.advance(0)
    outcome = result_of(client.settle())
    assert isinstance(outcome, SettledOnChain) is from_chain
    tx = outcome.tx if from_chain else outcome
    record = result_of(pair.client_store.client_channel(txid))
    assert record.state is ClientChannelState.SETTLED and record.close_tx == tx and record.client_change == 0
    assert record.note == ""
    assert pair.client_manager.connection(txid) is None


def test_exhausted_settlement_not_seen_yet_is_noted():
    """EOF after the exhausting payment and no settlement on the chain yet (the server has not
    broadcast it): the payment is paid, the open record says the settlement is awaited, and the
    settlement, once it appears, ends it SETTLED with the note cleared."""
    pair = LosesFinalMessages()
    hidden = []
    broadcast = pair.chain.broadcast

    def hold(tx):  # the server's settlement stays with the server for now
        hidden.append(tx)
        return defer.succeed(None)

    client = pair.connect(ClientSettings(channel_value=100_000, versions=VersionSelector.VERSION_2, fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    pair.chain.broadcast = hold
    d = client.pay(99_000)
    pair.pump()
    assert result_of(d).amount == 99_000
    settled = client.settle()
    assert not settled.called
    record = result_of(pair.client_store.client_channel(txid))
    assert record.state is ClientChannelState.OPEN and record.note == EXHAUSTED_NOTE
    pair.chain.broadcast = broadcast
    [tx] = hidden
    result_of(broadcast(tx))
    pair.clock.advance(0)
    assert result_of(settled) == SettledOnChain(tx)
    record = result_of(pair.client_store.client_channel(txid))
    assert record.state is ClientChannelState.SETTLED and record.close_tx == tx and record.note == ""
