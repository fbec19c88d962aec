"""A server on the ``signer:`` backend, in process: a client and a server paired in memory on the
embedded chain (Bitcoin Core's consensus engine), the server's wallet talking AMP to a signer
over an in-memory connection, time on a ``task.Clock``. Open, pay, settle (v1 and v2); the
server's own settlement before expiry; and the signer going away while a settlement is due:
it waits, fails after ``SETTLEMENT_WAIT`` with the reason, is retried, and goes out once the
signer is back. Every settlement passes Bitcoin Core's script interpreter and confirms."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from bitcoin.core import CTransaction

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channel"))

from channel_pair import Pair, result_of  # noqa: E402
from signer_setup import signer_wallet, signing_service  # noqa: E402
from twisted_paychan.bitcoin.consensus import verify_input  # noqa: E402
from twisted_paychan.bitcoin.scripts import ChannelScript  # noqa: E402
from twisted_paychan.chain.types import TxState  # noqa: E402
from twisted_paychan.channel.records import ServerChannelState  # noqa: E402
from twisted_paychan.channel.settings import ClientSettings, VersionSelector  # noqa: E402
from twisted_paychan.net.server_manager import ServerChannelManager  # noqa: E402
from twisted_paychan.wallet.remote import SETTLEMENT_WAIT  # noqa: E402

SELECTORS = {1: VersionSelector.VERSION_1, 2: VersionSelector.VERSION_2}
VALUE = 1_000_000


class SignerPair(Pair):
    """A :class:`Pair` whose server keeps its keys in a signer."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(chain_dir=tmp_path / "chain", start=int(time.time()) - 3 * 86400)
        (tmp_path / "signer").mkdir()
        self.signer = signing_service(tmp_path / "signer", clock=self.clock)
        self.server_wallet, self.endpoint = signer_wallet(self.signer, self.chain, self.clock)
        self.channels = ServerChannelManager(self.server_wallet, self.chain, self.server_store, self.server_settings,
                                             self.clock)

    def pump(self) -> None:
        for _ in range(20):
            self.endpoint.pump()
            super().pump()

    def settle_on_chain(self, settlement: bytes, txid: bytes) -> CTransaction:
        record = result_of(self.server_store.server_channel(txid))
        channel = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
        assert verify_input(settlement, 0, channel.script_pubkey, record.value)
        self.mine(1)
        tx = CTransaction.deserialize(settlement)
        assert result_of(self.chain.tx_status(tx.GetTxid())).state is TxState.CONFIRMED
        payout = tx.vout[-1]
        assert bytes(payout.scriptPubKey) == self.signer.payout_script(txid)[0]  # the signer's own
        return tx

    def close(self) -> None:
        self.channels.stop()
        self.server_wallet.close()
        self.signer.wallet.close()
        self.signer.ledger.close()
        self.chain.close()


def _opened(pair: SignerPair, version: int, paid: int) -> tuple[object, bytes]:
    client = pair.connect(ClientSettings(channel_value=VALUE, versions=SELECTORS[version], fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.pay(paid - 1000)
    pair.pump()
    result_of(d)
    pair.mine(1)
    return client, txid


@pytest.mark.parametrize("version", [1, 2])
def test_open_pay_settle(tmp_path: Path, version: int) -> None:
    pair = SignerPair(tmp_path)
    try:
        client, txid = _opened(pair, version, 30_000)
        d = client.settle()  # type: ignore[attr-defined]
        pair.pump()
        tx = pair.settle_on_chain(result_of(d), txid)
        assert tx.vout[-1].nValue == 30_000 - (VALUE - sum(o.nValue for o in tx.vout))
        # The payout is the server's money: its wallet follows the script the signer chose.
        assert result_of(pair.server_wallet.balance()).confirmed == tx.vout[-1].nValue
    finally:
        pair.close()


def _until_settled(pair: SignerPair, txid: bytes, step: int = 1800) -> None:
    record = result_of(pair.server_store.server_channel(txid))
    while record.state is not ServerChannelState.SETTLED:
        assert pair.clock.seconds() < record.expiry, "the server did not settle before expiry"
        pair.mine(1, spacing=step)
        pair.endpoint.pump()
        pair.clock.advance(0)
        pair.endpoint.pump()
        record = result_of(pair.server_store.server_channel(txid))


@pytest.mark.parametrize("version", [1, 2])
def test_the_server_settles_before_expiry(tmp_path: Path, version: int) -> None:
    pair = SignerPair(tmp_path)
    try:
        client, txid = _opened(pair, version, 20_000)
        client.disconnect()  # type: ignore[attr-defined]
        pair.pump()
        _until_settled(pair, txid)
        record = result_of(pair.server_store.server_channel(txid))
        assert record.settlement_tx is not None and record.best_value == 20_000
        pair.settle_on_chain(record.settlement_tx, txid)
    finally:
        pair.close()


def test_a_settlement_waits_for_the_signer_and_goes_out_when_it_is_back(tmp_path: Path) -> None:
    pair = SignerPair(tmp_path)
    try:
        client, txid = _opened(pair, 2, 20_000)
        client.disconnect()  # type: ignore[attr-defined]
        pair.pump()
        pair.endpoint.stop()
        assert pair.server_wallet.signer_problem() is not None
        record = result_of(pair.server_store.server_channel(txid))
        # Past the moment the server settles, and past the settlement's wait for the signer.
        pair.clock.advance(record.expiry - pair.server_settings.settle_offset - pair.clock.seconds() + 1)
        pair.clock.advance(SETTLEMENT_WAIT + 1)
        record = result_of(pair.server_store.server_channel(txid))
        assert record.state in (ServerChannelState.SETTLING, ServerChannelState.STUCK)
        assert record.settlement_tx is None  # nothing signed, nothing lost: the payment stands
        assert record.best_value == 20_000 and pair.server_wallet.failures >= 1
        pair.endpoint.start()
        _until_settled(pair, txid, step=300)
        assert pair.server_wallet.signer_problem() is None
        record = result_of(pair.server_store.server_channel(txid))
        assert record.settlement_tx is not None
        pair.settle_on_chain(record.settlement_tx, txid)
    finally:
        pair.close()
