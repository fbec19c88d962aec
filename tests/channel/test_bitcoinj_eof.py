"""Stock bitcoinj loses its last message when it closes (spec §1.4): a client that asked to
settle sees EOF instead of CLOSE{settlement}, and after an exhausting payment may see neither
the PAYMENT_ACK nor the CLOSE. Our client treats EOF as the normal end and learns the
settlement from the chain."""

from channel_pair import Pair, failure_of, result_of
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
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


def test_eof_after_exhausting_payment():
    pair = LosesFinalMessages()
    client = pair.connect(ClientSettings(channel_value=100_000, versions=VersionSelector.VERSION_1, fee_rate=1000))
    result_of(client.opened)
    d = client.pay(99_000)  # leaves 0: the server settles and closes; its ack is lost
    pair.pump()
    f = failure_of(d)
    assert f.check(ChannelClosed) and f.value.reason is CloseReason.CHANNEL_EXHAUSTED
