"""The signer's AMP protocol as the server's ``signer:`` backend speaks it, over an in-memory
connection (``twisted.test.iosim``, real AMP boxes): a refusal arrives as :class:`Refused` with
the signer's reason; the keys of a signer that handed out more than one page of them all reach
the server; a signer of another network is not used; a server handshake gets ERROR{OTHER} when
the signer does not answer, or refuses its v1 refund."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from twisted.internet.task import Clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channel"))

from signer_setup import NOW, Channel, PumpedEndpoint, signer_wallet, signing_service  # noqa: E402
from twisted_paychan.bitcoin.addresses import TESTNET  # noqa: E402
from twisted_paychan.chain.memory import MemoryChain  # noqa: E402
from twisted_paychan.signer import policy  # noqa: E402
from twisted_paychan.signer import protocol as p  # noqa: E402
from twisted_paychan.wallet.remote import SignerLink, SignerWallet  # noqa: E402


def _failure(d, endpoint: PumpedEndpoint):
    endpoint.pump()
    out = []
    d.addBoth(out.append)
    endpoint.clock.advance(0)
    assert out, "no answer"
    return out[0]


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(NOW)
    return c


def test_a_refusal_arrives_with_its_reason(tmp_path: Path, clock: Clock) -> None:
    service = signing_service(tmp_path, clock=clock)
    wallet, endpoint = signer_wallet(service, MemoryChain(clock), clock)
    channel = Channel.open(service)
    channel.settle(service, client_change=100_000)
    d = wallet._link.call(p.SignSettlement, version=2, contract=channel.contract, client_key=channel.client.public_key,
                          server_key=channel.server_key, expiry=channel.expiry, client_change=200_000,
                          client_signature=channel.payment(200_000), rates=[1000])
    f = _failure(d, endpoint)
    assert f.check(p.Refused)
    assert "pays the server 800000 sat, less than the best payment it was shown (900000 sat)" in f.getErrorMessage()
    assert wallet.signer_problem() is None and wallet.failures == 0  # a refusal is an answer
    wallet.close()


def test_every_page_of_keys_reaches_the_server(tmp_path: Path, clock: Clock) -> None:
    service = signing_service(tmp_path, clock=clock)
    scripts = [service.new_address("p2wpkh")[0] for _ in range(p.PAGE + 30)]
    scripts.append(service.payout_script(b"\x01" * 32)[0])
    wallet, _ = signer_wallet(service, MemoryChain(clock), clock)
    assert all(wallet.is_mine(s) for s in scripts)
    wallet.close()


def test_a_signer_of_another_network_is_not_used(tmp_path: Path, clock: Clock) -> None:
    service = signing_service(tmp_path, clock=clock)
    endpoint = PumpedEndpoint(service, clock)
    wallet = SignerWallet(MemoryChain(clock), TESTNET, SignerLink(endpoint, clock, TESTNET, "memory"))
    wallet.start()
    endpoint.pump()
    assert "speaks protocol 1 on regtest; this server needs 1 on testnet" in str(wallet.signer_problem())
    wallet.close()


from channel_pair import result_of  # noqa: E402


def _pair(tmp_path: Path):
    from test_signer_lifecycle import SignerPair

    return SignerPair(tmp_path)


def test_a_new_channel_without_the_signer_is_told_so(tmp_path: Path) -> None:
    from twisted_paychan.channel.settings import ClientSettings

    pair = _pair(tmp_path)
    try:
        pair.endpoint.stop()
        client = pair.connect(ClientSettings(channel_value=1_000_000, fee_rate=1000))
        pair.clock.advance(10)
        pair.pump()
        errors = [raw for direction, raw in pair.wire if direction == "s2c"]
        assert b"the server cannot make a channel key now" in errors[-1]
        assert client.opened.called
        assert pair.server_wallet.provisional_count() == 0
    finally:
        pair.close()


def test_a_v1_refund_the_signer_refuses_ends_the_handshake(tmp_path: Path, monkeypatch) -> None:
    from twisted_paychan.channel.settings import ClientSettings, VersionSelector

    monkeypatch.setattr(policy, "MIN_REFUND_DELAY", 30 * 86400)  # longer than any channel's window
    pair = _pair(tmp_path)
    try:
        pair.connect(ClientSettings(channel_value=1_000_000, fee_rate=1000, versions=VersionSelector.VERSION_1))
        errors = [raw for direction, raw in pair.wire if direction == "s2c"]
        assert b"the server's signer did not sign: " in errors[-1] and b"s ahead" in errors[-1]
        assert pair.server_closed is not None
        assert result_of(pair.server_store.server_channels()) == []  # no channel, and no contract
        assert pair.server_wallet.provisional_count() == 0
    finally:
        pair.close()
