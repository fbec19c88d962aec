"""
PROTOCOL.md Appendix A.2, row by row: what the client does with each offending message, in both
protocol versions where the check applies. Each test names its row in the docstring.

The machine is driven directly (sans-IO). Where bitcoinj differs from the spec's
**[Recommended]** behaviour our client follows the recommendation; those tests say so. Failing
the payment in flight is the channel object's job, so those rows use the in-memory pair.
"""

from __future__ import annotations

import pytest

from channel_pair import Pair, failure_of, result_of
from check_matrix_helpers import (
    BAD_FRAMES,
    CLIENT_KEY,
    GARBAGE_SIGNATURE,
    MT,
    NON_CANONICAL_KEYS,
    NOW,
    OFF_CURVE_KEYS,
    SELECTOR,
    SERVER_KEY,
    STRANGER,
    VALUE,
    assert_closed_quietly,
    assert_frame_stops_at_the_framing,
    assert_ignored,
    assert_refused,
    bare,
    client_closing,
    client_fresh,
    client_funding,
    client_open,
    client_paying,
    client_storing,
    client_waiting_for_initiate,
    client_waiting_for_open,
    client_waiting_for_refund,
    high_s,
    initiate,
    of_kind,
    retag,
)
from twisted_paychan.bitcoin.refund import refund_sighash
from twisted_paychan.bitcoin.signatures import sign
from twisted_paychan.bitcoin.transactions import parse_transaction
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.errors import ChannelClosed, CloseReason, ErrorCode
from twisted_paychan.channel.settings import ClientSettings, VersionSelector
from twisted_paychan.channel.records import ClientChannelRecord
from twisted_paychan.wire import messages as m

SYNTAX = ErrorCode.SYNTAX_ERROR
BAD = ErrorCode.BAD_TRANSACTION
INVALID = CloseReason.REMOTE_SENT_INVALID_MESSAGE
TOO_MUCH = CloseReason.SERVER_REQUESTED_TOO_MUCH_VALUE


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


def settings(version: int, **changes) -> ClientSettings:
    fields = dict(channel_value=VALUE, versions=SELECTOR[version], fee_rate=1000)
    fields.update(changes)
    return ClientSettings(**fields)


def assert_nothing_locked(effects: list) -> None:
    """No contract funded and nothing stored."""
    assert not of_kind(effects, fx.FundContract) and not of_kind(effects, fx.StoreClientChannel)


#: Each client step (B.1), for the rows that hold "in every step"; v1-only steps skip in v2.
STEPS = {
    "waiting for SERVER_VERSION": client_fresh,
    "waiting for INITIATE": client_waiting_for_initiate,
    "funding the contract": client_funding,
    "waiting for RETURN_REFUND (v1)": lambda v: client_waiting_for_refund(),
    "storing the channel": client_storing,
    "waiting for CHANNEL_OPEN": client_waiting_for_open,
    "channel open": client_open,
    "payment in flight": client_paying,
    "waiting for the server's CLOSE": client_closing,
}


def at(step: str, version: int):
    if step.endswith("(v1)") and version == 2:
        pytest.skip("v1-only step")
    return STEPS[step](version)


# -- SERVER_VERSION -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [s for s in STEPS if s != "waiting for SERVER_VERSION"])
def test_server_version_in_the_wrong_step(version, step):
    """A.2 "SERVER_VERSION in the wrong step": SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    assert_refused(at(step, version).receive(m.server_version(version)), SYNTAX, INVALID)


def test_server_version_without_its_field(version):
    """A.2 "SERVER_VERSION ... field missing": SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    assert_refused(client_fresh(version).receive(bare(MT.SERVER_VERSION)), SYNTAX, INVALID)


@pytest.mark.parametrize(
    "selector, major",
    [
        (VersionSelector.VERSION_1, 2),
        (VersionSelector.VERSION_1, 3),
        (VersionSelector.VERSION_2, 1),
        (VersionSelector.VERSION_2, 3),
        (VersionSelector.VERSION_2_ALLOW_1, 3),
        (VersionSelector.VERSION_2_ALLOW_1, 0),
        (VersionSelector.VERSION_2_ALLOW_1, -1),
    ],
    ids=lambda x: x.name if isinstance(x, VersionSelector) else str(x),
)
def test_server_version_major_rejected(selector, major):
    """A.2 "SERVER_VERSION with a major the selector rejects": NO_ACCEPTABLE_VERSION /
    NO_ACCEPTABLE_VERSION (§3.3 step 2)."""
    s = client_fresh(selector.requested_major, selector=selector)
    out = s.receive(m.server_version(major))
    assert_refused(out, ErrorCode.NO_ACCEPTABLE_VERSION, CloseReason.NO_ACCEPTABLE_VERSION)


def test_server_version_lower_major_accepted():
    """§3.3 step 3, the other side: VERSION_2_ALLOW_1 asked for 2, got 1, goes on in v1 (its
    contract locks the v1 multisig)."""
    s = client_waiting_for_initiate(1, selector=VersionSelector.VERSION_2_ALLOW_1)
    assert s.machine.major == 1
    [fund] = s.receive(initiate())
    assert fund.script_pubkey[0] == 0x52 and fund.script_pubkey[-1] == 0xAE  # OP_2 ... OP_CHECKMULTISIG


def resumable_record(version: int) -> ClientChannelRecord:
    s = client_waiting_for_open(version)
    assert s.machine.record is not None
    return s.machine.record


def test_resume_in_another_version_is_refused():
    """§9.1 item 6 [Recommended]: a stored channel is offered only in its own version, and if the
    server picks another major (VERSION_2_ALLOW_1 resuming a v2 channel, answered with 1) the
    resume is refused: NO_ACCEPTABLE_VERSION, close; the record is not released as if the server
    had refused it. bitcoinj would rebuild it in the wrong version. (A v1 record is never offered
    by a client that asks for 2: that is a local usage error.)"""
    record = resumable_record(2)
    s = client_fresh(2, settings(2, versions=VersionSelector.VERSION_2_ALLOW_1), resume=record)
    out = s.receive(m.server_version(1))
    assert_refused(out, ErrorCode.NO_ACCEPTABLE_VERSION, CloseReason.NO_ACCEPTABLE_VERSION)
    assert not of_kind(out, fx.ResumeRefused)
    with pytest.raises(ValueError):
        client_fresh(2, settings(2, versions=VersionSelector.VERSION_2_ALLOW_1), resume=resumable_record(1))


# -- INITIATE -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    ["waiting for SERVER_VERSION", "funding the contract", "waiting for RETURN_REFUND (v1)",
     "storing the channel", "waiting for CHANNEL_OPEN", "channel open"],
)
def test_initiate_in_the_wrong_step(version, step):
    """A.2 "INITIATE in the wrong step": SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE. A contract
    already funded but not yet stored is handed back to the wallet."""
    s = at(step, version)
    out = s.receive(initiate())
    assert_refused(out, SYNTAX, INVALID)
    if step == "funding the contract":
        assert of_kind(s.machine.contract_funded(s.contract, NOW), fx.ReleaseContract)
    if step == "waiting for RETURN_REFUND (v1)":
        assert of_kind(out, fx.ReleaseContract)


def test_initiate_without_its_field(version):
    """A.2 "INITIATE ... field missing": SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    assert_refused(client_waiting_for_initiate(version).receive(bare(MT.INITIATE)), SYNTAX, INVALID)


@pytest.mark.parametrize(
    "fields",
    [
        {"expiry": 2**63},
        {"expiry": 2**64 - 1},
        {"min_channel_size": 2**63},
        {"min_channel_size": 2**64 - 1},
    ],
    ids=["E-2^63", "E-2^64-1", "min-size-2^63", "min-size-2^64-1"],
)
def test_initiate_value_at_or_above_2_63(version, fields):
    """A.2 "INITIATE ... expire_time_secs / min_accepted_channel_size >= 2^63": SYNTAX_ERROR /
    REMOTE_SENT_INVALID_MESSAGE (checked before the time window, §5 step 3 check 3)."""
    out = client_waiting_for_initiate(version).receive(initiate(**fields))
    assert_refused(out, SYNTAX, INVALID)
    assert_nothing_locked(out)


@pytest.mark.parametrize("window", [86_340, 3600])
def test_initiate_expiry_too_late(version, window):
    """A.2 "INITIATE: E too late": TIME_WINDOW_UNACCEPTABLE / TIME_WINDOW_UNACCEPTABLE, for
    E > now + time_window + 60; E at exactly that bound is accepted (§10.1)."""
    s = client_waiting_for_initiate(version, settings=settings(version, time_window=window))
    out = s.receive(initiate(expiry=NOW + window + 61))
    assert_refused(out, ErrorCode.TIME_WINDOW_UNACCEPTABLE, CloseReason.TIME_WINDOW_UNACCEPTABLE)
    s = client_waiting_for_initiate(version, settings=settings(version, time_window=window))
    assert of_kind(s.receive(initiate(expiry=NOW + window + 60)), fx.FundContract)


def test_initiate_channel_size_too_large(version):
    """A.2 "INITIATE: min_accepted_channel_size > maxValue": CHANNEL_VALUE_TOO_LARGE /
    SERVER_REQUESTED_TOO_MUCH_VALUE; ``missing`` says by how much (§12.4). Equal is fine."""
    s = client_waiting_for_initiate(version)
    out = s.receive(initiate(min_channel_size=VALUE + 1))
    assert_refused(out, ErrorCode.CHANNEL_VALUE_TOO_LARGE, TOO_MUCH)
    assert s.machine.missing == 1
    assert of_kind(client_waiting_for_initiate(version).receive(initiate(min_channel_size=VALUE)), fx.FundContract)


def test_initiate_min_payment_too_large(version):
    """A.2 "INITIATE: min_payment > acceptableMinPayment": MIN_PAYMENT_TOO_LARGE with
    expected_value = our acceptable maximum / SERVER_REQUESTED_TOO_MUCH_VALUE. Equal is fine."""
    s = client_waiting_for_initiate(version, settings=settings(version, max_min_payment=2500))
    body = assert_refused(s.receive(initiate(min_payment=2600)), ErrorCode.MIN_PAYMENT_TOO_LARGE, TOO_MUCH)
    assert body.HasField("expected_value") and body.expected_value == 2500
    assert s.machine.missing == 100
    s = client_waiting_for_initiate(version, settings=settings(version, max_min_payment=2500))
    assert of_kind(s.receive(initiate(min_payment=2500)), fx.FundContract)


@pytest.mark.parametrize("key", list(NON_CANONICAL_KEYS.values()), ids=list(NON_CANONICAL_KEYS))
def test_initiate_server_key_not_canonical(version, key):
    """A.2 "INITIATE: K_S not in canonical form" (hybrid 06/07 included, §2.6): BAD_TRANSACTION /
    REMOTE_SENT_INVALID_MESSAGE."""
    out = client_waiting_for_initiate(version).receive(initiate(key=key))
    assert_refused(out, BAD, INVALID)
    assert_nothing_locked(out)


@pytest.mark.parametrize("key", list(OFF_CURVE_KEYS.values()), ids=list(OFF_CURVE_KEYS))
def test_initiate_server_key_not_on_the_curve(version, key):
    """A.2 "INITIATE: K_S in canonical form but not a curve point": bitcoinj drops;
    [Recommended] (§5 intro) BAD_TRANSACTION for an undecodable key /
    REMOTE_SENT_INVALID_MESSAGE."""
    out = client_waiting_for_initiate(version).receive(initiate(key=key))
    assert_refused(out, BAD, INVALID)
    assert_nothing_locked(out)


@pytest.mark.parametrize("value", [1545, 1000, 539], ids=["under-refund-fee-1545", "1000", "p2sh-dust-539"])
def test_initiate_channel_value_unusable(version, value):
    """A.2 "INITIATE: channel value unusable (dust, or under the refund fee)":
    CHANNEL_VALUE_TOO_LARGE / SERVER_REQUESTED_TOO_MUCH_VALUE (the misleading code is
    bitcoinj's). 1546 sat is the smallest usable channel (§4.6)."""
    s = client_waiting_for_initiate(version, settings=settings(version, channel_value=value))
    out = s.receive(initiate(min_channel_size=1, min_payment=0))
    assert_refused(out, ErrorCode.CHANNEL_VALUE_TOO_LARGE, TOO_MUCH)
    assert_nothing_locked(out)
    s = client_waiting_for_initiate(version, settings=settings(version, channel_value=1546))
    assert of_kind(s.receive(initiate(min_channel_size=1, min_payment=0)), fx.FundContract)


def test_wallet_cannot_fund(version):
    """A.2 "INITIATE: wallet cannot fund": bitcoinj sends nothing and leaves the connection open;
    [Recommended] (§5 step 3 check 8) ERROR{CHANNEL_VALUE_TOO_LARGE} and close. The close reason
    is ours: SERVER_REQUESTED_TOO_MUCH_VALUE, as for the other "cannot lock that much" cases."""
    s = client_funding(version)
    out = s.machine.funding_failed("insufficient money")
    assert_refused(out, ErrorCode.CHANNEL_VALUE_TOO_LARGE, TOO_MUCH)
    assert not of_kind(out, fx.StoreClientChannel)


@pytest.mark.parametrize(
    "case",
    ["P-above-V", "P-2^63", "P-2^64-1", "E-passed", "E-not-a-timestamp"],
)
def test_initial_payment_cannot_be_made(version, case):
    """A.2 "initial payment cannot be made (P > V, min_payment >= 2^63, or E already passed)":
    SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE. A min_payment of 2^63 or more reads as negative
    in bitcoinj, so it passes the MIN_PAYMENT_TOO_LARGE check and fails here, with the default
    acceptable minimum too. An E below 500000000 (a block height, not a time) is already past.

    bitcoinj notices only after storing the channel (v2 right after INITIATE, v1 after
    RETURN_REFUND) and keeps that record. Our client checks before funding anything, so there is
    no contract, no record and nothing to keep: the same ERROR, with nothing locked."""
    kwargs, initiate_fields = {}, {}
    if case == "P-above-V":
        kwargs = {"settings": settings(version, channel_value=5000, max_min_payment=10_000)}
        initiate_fields = {"min_payment": 5001, "min_channel_size": 5000}
    elif case.startswith("P-2^"):
        initiate_fields = {"min_payment": 2**63 if case == "P-2^63" else 2**64 - 1}
    elif case == "E-passed":
        initiate_fields = {"expiry": NOW - 1}
    else:
        initiate_fields = {"expiry": 499_999_999}
    s = client_waiting_for_initiate(version, **kwargs)
    out = s.receive(initiate(**initiate_fields))
    assert_refused(out, SYNTAX, INVALID)
    assert_nothing_locked(out)


def test_initiate_after_a_resume_request_opens_a_new_channel(version):
    """§9.1 step 4: INITIATE after we asked to resume means the server refused; a new channel
    is opened. [Recommended] the stored channel is released (ResumeRefused) at once."""
    record = resumable_record(version)
    s = client_waiting_for_initiate(version, resume=record)
    out = s.receive(initiate())
    assert [e.contract_txid for e in of_kind(out, fx.ResumeRefused)] == [record.contract_txid]
    assert of_kind(out, fx.FundContract)


# -- RETURN_REFUND ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    ["waiting for INITIATE", "funding the contract", "storing the channel", "waiting for CHANNEL_OPEN",
     "channel open"],
)
def test_return_refund_not_expected(version, step):
    """A.2 "RETURN_REFUND when major != 1, wrong step": SYNTAX_ERROR /
    REMOTE_SENT_INVALID_MESSAGE (v2 never expects one; v1 only after PROVIDE_REFUND)."""
    s = at(step, version)
    assert_refused(s.receive(m.return_refund(b"\x30" + b"\x00" * 70 + b"\x82")), SYNTAX, INVALID)


def test_return_refund_without_its_field():
    """A.2 "RETURN_REFUND ... field missing": SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    out = client_waiting_for_refund().receive(bare(MT.RETURN_REFUND))
    assert_refused(out, SYNTAX, INVALID)
    assert of_kind(out, fx.ReleaseContract)


def _refund_signature_cases():
    def good(s):
        return s.refund_signature()

    def flags(byte):
        def make(s):
            tx = parse_transaction(s.unsigned_refund)
            return sign(SERVER_KEY, refund_sighash(tx, s.channel, byte), byte)

        return make

    def other_tx(s):
        tx = bytearray(s.unsigned_refund)
        tx[-4:] = (int.from_bytes(tx[-4:], "little") + 1).to_bytes(4, "little")  # lock time + 1
        return s.refund_signature(tx=bytes(tx))

    return {
        "not-der": lambda s: GARBAGE_SIGNATURE,
        "empty": lambda s: b"",
        "undefined-sighash-0x05": lambda s: retag(good(s), 0x05),
        "high-s": lambda s: high_s(good(s)),
        "flags-all-0x01": flags(0x01),
        "flags-none-0x02": flags(0x02),
        "flags-single-acp-0x83": flags(0x83),
        "flags-all-acp-0x81": flags(0x81),
        "wrong-key": lambda s: s.refund_signature(signer=STRANGER),
        "client-key": lambda s: s.refund_signature(signer=CLIENT_KEY),
        "over-another-refund": other_tx,
    }


@pytest.mark.parametrize("case", list(_refund_signature_cases()))
def test_return_refund_bad_signature(case):
    """A.2 "RETURN_REFUND: signature not canonical or undecodable, flags != 0x82, script check
    fails": BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE (v1 only). An empty signature is
    BAD_TRANSACTION in bitcoinj too; [Recommended] (§13 item 3) high S is refused. Nothing is
    stored, and the funded contract goes back to the wallet."""
    s = client_waiting_for_refund()
    out = s.receive(m.return_refund(_refund_signature_cases()[case](s)))
    assert_refused(out, BAD, INVALID)
    assert not of_kind(out, fx.StoreClientChannel)
    assert [e.funded for e in of_kind(out, fx.ReleaseContract)] == [s.contract]


# -- CHANNEL_OPEN -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    ["waiting for SERVER_VERSION", "waiting for INITIATE", "funding the contract",
     "waiting for RETURN_REFUND (v1)", "storing the channel", "channel open"],
)
def test_channel_open_not_expected(version, step):
    """A.2 "CHANNEL_OPEN not expected" (including right after SERVER_VERSION when no resume was
    asked for, §9.1 step 4): SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    assert_refused(at(step, version).receive(m.channel_open()), SYNTAX, INVALID)


def test_channel_open_after_a_resume_request(version):
    """§9.1 step 4, the other side: CHANNEL_OPEN right after SERVER_VERSION resumes the channel
    we offered."""
    record = resumable_record(version)
    s = client_waiting_for_initiate(version, resume=record)
    [opened] = s.receive(m.channel_open())
    assert opened == fx.ChannelOpened(record.contract_txid, resumed=True)


# -- PAYMENT_ACK ------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["waiting for SERVER_VERSION", "waiting for INITIATE", "funding the contract",
                                  "waiting for CHANNEL_OPEN", "channel open", "waiting for the server's CLOSE"])
def test_payment_ack_with_nothing_in_flight_is_ignored(version, step):
    """A.2 "PAYMENT_ACK with no payment in flight": ignored (§7.4), in any step."""
    s = at(step, version)
    before = s.step
    assert_ignored(s.receive(m.payment_ack(b"stray")))
    assert s.step is before


def test_payment_ack_before_the_payment_left_is_ignored(version):
    """A.2 "PAYMENT_ACK with no payment in flight": a payment still being stored has not been
    sent, so an ack now is not for it; the real ack afterwards still is."""
    s = client_open(version)
    s.machine.pay(1000, None, NOW)
    assert_ignored(s.receive(m.payment_ack()))
    s.machine.change_stored()
    assert s.receive(m.payment_ack(b"receipt")) == [fx.PaymentAcked(1000, b"receipt")]


# -- CLOSE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", list(STEPS))
def test_close_in_any_step(version, step):
    """A.2 "CLOSE (any time)" without a settlement: nothing sent; close CLIENT_REQUESTED_CLOSE if
    settle() was called, else SERVER_REQUESTED_CLOSE. A funded contract that never left is
    handed back to the wallet."""
    s = at(step, version)
    out = s.receive(m.close())
    expected = CloseReason.CLIENT_REQUESTED_CLOSE if step == "waiting for the server's CLOSE" \
        else CloseReason.SERVER_REQUESTED_CLOSE
    assert_closed_quietly(out, expected)
    if step == "funding the contract":
        assert of_kind(s.machine.contract_funded(s.contract, NOW), fx.ReleaseContract)
    if step == "waiting for RETURN_REFUND (v1)":
        assert of_kind(out, fx.ReleaseContract)


@pytest.mark.parametrize("asked", [True, False], ids=["after-settle", "unasked"])
def test_close_with_a_valid_settlement(version, asked):
    """A.2 "CLOSE ... settlement, if present: ... record if valid" (§8.3): SettlementSeen, then
    CLIENT_REQUESTED_CLOSE if we asked, else SERVER_REQUESTED_CLOSE; nothing sent."""
    s = client_closing(version) if asked else client_open(version)
    settlement = s.settlement()
    out = s.receive(m.close(settlement))
    assert of_kind(out, fx.SettlementSeen) == [fx.SettlementSeen(s.contract.txid, settlement)]
    reason = CloseReason.CLIENT_REQUESTED_CLOSE if asked else CloseReason.SERVER_REQUESTED_CLOSE
    assert_closed_quietly(out, reason)


@pytest.mark.parametrize("case", ["spends-another-output", "bad-signature", "fails-sanity"])
def test_close_with_an_invalid_settlement_is_ignored(version, case):
    """A.2 "CLOSE ... ignore if invalid" (§8.3 step 3): a settlement that parses but does not
    validly spend the contract is not recorded; the close goes on as without one."""
    from check_matrix_helpers import raw_tx

    s = client_closing(version)
    good = parse_transaction(s.settlement())
    if case == "spends-another-output":
        bad = raw_tx([(s.contract.txid, 1, 0xFFFFFFFF)], [(1000, b"\x51")], 0)
    elif case == "bad-signature":
        other = parse_transaction(s.settlement(payout_to=SERVER_KEY.public_key))
        bad = _swap_outputs(good, other)
    else:
        bad = raw_tx([(s.contract.txid, 0, 0xFFFFFFFF)], [], 0)
    out = s.receive(m.close(bad))
    assert not of_kind(out, fx.SettlementSeen)
    assert_closed_quietly(out, CloseReason.CLIENT_REQUESTED_CLOSE)


def _swap_outputs(signed, other) -> bytes:
    """``signed``'s input (and signatures) with ``other``'s outputs: the server's ALL signature
    no longer matches."""
    from twisted_paychan.bitcoin.transactions import make_transaction, serialize

    return serialize(make_transaction(list(signed.vin), list(other.vout), signed.nLockTime, signed.nVersion))


@pytest.mark.parametrize("step", ["channel open", "waiting for the server's CLOSE", "waiting for INITIATE"])
def test_close_with_an_unparsable_settlement(version, step):
    """A.2 "CLOSE ... settlement ... parse (BAD_TRANSACTION if that fails)" (§8.3 step 1):
    BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE, whether or not we asked to settle."""
    s = at(step, version)
    out = s.receive(m.close(b"\x01\x00\x00\x00 not a transaction"))
    assert_refused(out, BAD, INVALID)
    assert not of_kind(out, fx.SettlementSeen)


# -- ERROR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", list(STEPS))
def test_error_closes_quietly(version, step):
    """A.2 "ERROR": close REMOTE_SENT_ERROR; nothing sent (§8.5)."""
    out = at(step, version).receive(m.error(m.ErrorCode.BAD_TRANSACTION, "no"))
    assert_closed_quietly(out, CloseReason.REMOTE_SENT_ERROR)
    assert "BAD_TRANSACTION" in close_detail(out)


def close_detail(out: list) -> str:
    return [e for e in out if isinstance(e, fx.Close)][0].detail


@pytest.mark.parametrize("step", list(STEPS))
def test_error_without_its_field(version, step):
    """A.2 "ERROR ... (without the error field: SYNTAX_ERROR)" / REMOTE_SENT_INVALID_MESSAGE."""
    assert_refused(at(step, version).receive(bare(MT.ERROR)), SYNTAX, INVALID)


#: One well-formed example of each message only a client may send (§8.5).
CLIENT_ONLY = {
    "CLIENT_VERSION": m.client_version(2),
    "PROVIDE_REFUND": m.provide_refund(CLIENT_KEY.public_key, b"\x01\x00\x00\x00"),
    "PROVIDE_CONTRACT": m.provide_contract(b"\x01\x00\x00\x00", m.payment(0, b"\x30\x82")),
    "UPDATE_PAYMENT": m.update_payment(VALUE - 2000, b"\x30\x83"),
}


@pytest.mark.parametrize("step", ["waiting for SERVER_VERSION", "waiting for INITIATE", "waiting for CHANNEL_OPEN",
                                  "channel open", "payment in flight"])
@pytest.mark.parametrize("name", list(CLIENT_ONLY))
def test_client_to_server_message(version, step, name):
    """A.2 "CLIENT_VERSION, PROVIDE_REFUND, PROVIDE_CONTRACT, UPDATE_PAYMENT" from a server:
    SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE, in any step."""
    assert_refused(at(step, version).receive(CLIENT_ONLY[name]), SYNTAX, INVALID)


# -- the payment in flight fails (channel object, in the pair) -------------------------------------


@pytest.mark.parametrize(
    "message, reason",
    [
        pytest.param(m.error(m.ErrorCode.OTHER), CloseReason.REMOTE_SENT_ERROR, id="ERROR"),
        pytest.param(CLIENT_ONLY["UPDATE_PAYMENT"], INVALID, id="UPDATE_PAYMENT"),
        pytest.param(CLIENT_ONLY["CLIENT_VERSION"], INVALID, id="CLIENT_VERSION"),
        pytest.param(bare(MT.ERROR), INVALID, id="ERROR-without-error"),
        pytest.param(m.close(), CloseReason.SERVER_REQUESTED_CLOSE, id="CLOSE"),
    ],
)
def test_payment_in_flight_fails(version, message, reason):
    """A.2 "ERROR: fail the payment in flight" and "CLIENT_VERSION, ..., UPDATE_PAYMENT: fail the
    payment in flight": the pay() Deferred fails with ChannelClosed carrying the close reason.
    bitcoinj leaves it hanging on CLOSE; [Recommended] (§7.4) fail it in every case."""
    pair = Pair()
    client = pair.connect(settings(version))
    result_of(client.opened)
    d = client.pay(1000)
    pair.to_server.clear()  # the server never answers
    pair.client.message_received(message)
    failure = failure_of(d)
    assert failure.check(ChannelClosed) and failure.value.reason is reason
    assert pair.client_closed is reason


# -- below the machine: the framing ----------------------------------------------------------------


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_frame_that_is_not_a_message(frame):
    """A.2 "oversize frame, unparsable protobuf, unknown type": the connection is closed and the
    machine never sees it. bitcoinj sends nothing; our framing writes ERROR{SYNTAX_ERROR} first,
    which §1.3 [Recommended] allows. Details: tests/wire."""
    assert_frame_stops_at_the_framing(client_fresh(2), frame, m.server_version(2))


# Not applicable: A.2 "INITIATE while the wallet is encrypted and no setup key was given" (drop).
# Our client machine is handed its channel key's signer when it is built, before any message, so
# there is no path on which INITIATE finds the key locked.
