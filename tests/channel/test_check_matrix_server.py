"""
PROTOCOL.md Appendix A.1, row by row: what the server does with each offending message, in both
protocol versions where the check applies. Each test names its row in the docstring.

The machine is driven directly (sans-IO). Where bitcoinj "drops" (closes without an ERROR) or
otherwise differs from the spec's **[Recommended]** behaviour, our server follows the
recommendation; those tests say so. A few rows need a whole channel (the store keeping a
record); they use the in-memory pair.
"""

from __future__ import annotations

import pytest

from channel_pair import Pair, failure_of, result_of
from check_matrix_helpers import (
    BAD_FRAMES,
    BAD_PAYMENT_SIGNATURES,
    CLIENT_KEY,
    HYBRID_G,
    MIN_PAYMENT,
    MT,
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
    close_reasons,
    contract_tx,
    of_kind,
    payment_signature,
    sent,
    sent_types,
    server_broadcasting,
    server_fresh,
    server_initiated,
    server_open,
    server_settling,
    server_storing_payment,
    server_waiting_on_application,
    server_waiting_on_contract,
)
from twisted_paychan.bitcoin.scripts import ChannelScript, hash160, p2sh_script
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.errors import ChannelClosed, CloseReason, ErrorCode
from twisted_paychan.channel.server import ServerStep
from twisted_paychan.channel.settings import ClientSettings, ServerSettings
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.wire import messages as m

SYNTAX = ErrorCode.SYNTAX_ERROR
BAD = ErrorCode.BAD_TRANSACTION
INVALID = CloseReason.REMOTE_SENT_INVALID_MESSAGE


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request):
    return request.param


#: One well-formed example of each message only a server may send (§8.5).
SERVER_ONLY = {
    "SERVER_VERSION": m.server_version(2),
    "INITIATE": m.initiate(SERVER_KEY.public_key, 100_000, NOW + 86_340, 1000),
    "RETURN_REFUND": m.return_refund(b"\x30" + b"\x00" * 70 + b"\x82"),
    "CHANNEL_OPEN": m.channel_open(),
    "PAYMENT_ACK": m.payment_ack(b"info"),
}

# -- anything while the server is settling --------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: s.update(s.client_change - 1000), id="UPDATE_PAYMENT"),
        pytest.param(lambda s: m.close(), id="CLOSE"),
        pytest.param(lambda s: m.error(m.ErrorCode.OTHER), id="ERROR"),
        pytest.param(lambda s: bare(MT.ERROR), id="ERROR-without-error"),
        pytest.param(lambda s: m.client_version(2), id="CLIENT_VERSION"),
        pytest.param(lambda s: m.server_version(2), id="SERVER_VERSION"),
        pytest.param(lambda s: bare(MT.UPDATE_PAYMENT), id="UPDATE_PAYMENT-without-field"),
    ],
)
def test_anything_while_settling_is_ignored(version, make):
    """A.1 "anything while the server is settling: ignored" (§8.2 step 1); the settlement
    still ends with CLOSE{settlement} / CLIENT_REQUESTED_CLOSE."""
    s = server_settling(version)
    assert_ignored(s.receive(make(s)))
    assert s.step is ServerStep.SETTLING
    out = s.machine.settled(b"settlement")
    assert [msg.settlement.tx for msg in sent(out)] == [b"settlement"]
    assert close_reasons(out) == [CloseReason.CLIENT_REQUESTED_CLOSE]


# -- CLIENT_VERSION ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(lambda: m.provide_refund(CLIENT_KEY.public_key, b"\x00"), id="PROVIDE_REFUND"),
        pytest.param(lambda: m.provide_contract(b"\x00", m.payment(0, b"\x00")), id="PROVIDE_CONTRACT"),
        pytest.param(lambda: m.update_payment(VALUE - 2000, b"\x00"), id="UPDATE_PAYMENT"),
    ],
)
def test_client_version_must_come_first(first):
    """A.1 "CLIENT_VERSION not first": bitcoinj drops; [Recommended] SYNTAX_ERROR /
    REMOTE_SENT_INVALID_MESSAGE. (No version is negotiated yet, so there is one case.)"""
    assert_refused(server_fresh(2).receive(first()), SYNTAX, INVALID)


@pytest.mark.parametrize("when", ["after INITIATE", "channel open"])
def test_client_version_twice(version, when):
    """A.1 "CLIENT_VERSION not first" (a second one): [Recommended] SYNTAX_ERROR, not a drop."""
    s = server_initiated(version) if when == "after INITIATE" else server_open(version)
    assert_refused(s.receive(m.client_version(version)), SYNTAX, INVALID)


def test_client_version_without_its_field():
    """A.1 "CLIENT_VERSION ... field missing": [Recommended] SYNTAX_ERROR instead of a drop."""
    assert_refused(server_fresh(2).receive(bare(MT.CLIENT_VERSION)), SYNTAX, INVALID)


@pytest.mark.parametrize("major", [0, -1])
def test_client_version_major_not_spoken(major):
    """A.1 "CLIENT_VERSION with major not in {1,2}", when we speak nothing at or below it:
    NO_ACCEPTABLE_VERSION / NO_ACCEPTABLE_VERSION, and no SERVER_VERSION."""
    body = assert_refused(
        server_fresh(2).receive(m.client_version(major)),
        ErrorCode.NO_ACCEPTABLE_VERSION,
        CloseReason.NO_ACCEPTABLE_VERSION,
    )
    assert str(major) in body.explanation


@pytest.mark.parametrize("major", [3, 2**31 - 1])
def test_client_version_major_above_ours_gets_our_highest(major):
    """A.1 "CLIENT_VERSION with major not in {1,2}", above ours: bitcoinj refuses with
    NO_ACCEPTABLE_VERSION (it never offers a lower major, §3.2 step 2); we answer
    SERVER_VERSION{2}, the highest we speak below the client's, and go on in v2 (the client
    decides whether it can, §3.3 step 3)."""
    s = server_fresh(2)
    out = s.receive(m.client_version(major))
    [server_version] = sent(out)
    assert server_version.type == MT.SERVER_VERSION and server_version.server_version.major == 2
    assert s.machine.major == 2 and of_kind(out, fx.NewServerKey) and not close_reasons(out)
    assert sent_types(s.machine.server_key_ready(SERVER_KEY)) == [MT.INITIATE]
    assert s.step is ServerStep.WAITING_ON_CONTRACT


def test_client_version_major_not_configured_gets_lower_major():
    """§3.2 step 2 (transcript c2_): a v1-only bitcoinj server refuses a v2 request outright, even
    from a VERSION_2_ALLOW_1 client. Ours, limited to {1}, answers SERVER_VERSION{1} and goes on
    in v1: INITIATE, then it waits for the v1 refund."""
    s = server_fresh(1, ServerSettings(fee_rate=1000, versions=frozenset({1})))
    out = s.receive(m.client_version(2))
    [server_version] = sent(out)
    assert server_version.type == MT.SERVER_VERSION and server_version.server_version.major == 1
    assert s.machine.major == 1 and of_kind(out, fx.NewServerKey) and not close_reasons(out)
    assert sent_types(s.machine.server_key_ready(SERVER_KEY)) == [MT.INITIATE]
    assert s.step is ServerStep.WAITING_ON_UNSIGNED_REFUND


def test_client_version_below_ours_is_refused():
    """§3.2 step 2: a server limited to {2} speaks nothing at or below a v1 request:
    NO_ACCEPTABLE_VERSION / NO_ACCEPTABLE_VERSION (a server never offers a higher major)."""
    s = server_fresh(2, ServerSettings(fee_rate=1000, versions=frozenset({2})))
    body = assert_refused(s.receive(m.client_version(1)), ErrorCode.NO_ACCEPTABLE_VERSION, CloseReason.NO_ACCEPTABLE_VERSION)
    assert "[2]" in body.explanation and "1" in body.explanation


def client_version_with_hash(major: int, resume_hash: bytes) -> m.TwoWayChannelMessage:
    msg = m.client_version(major)
    msg.client_version.previous_channel_contract_hash = resume_hash
    return msg


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_resume_hash_of_wrong_length_is_ignored(version, length):
    """§9.2 step 1 (testBadResumeHash): a hash that is not 32 bytes is silently ignored; a new
    channel is negotiated (SERVER_VERSION, then INITIATE)."""
    s = server_fresh(version)
    out = s.receive(client_version_with_hash(version, b"\x11" * length))
    assert sent_types(out) == [MT.SERVER_VERSION]
    assert of_kind(out, fx.NewServerKey) and not of_kind(out, fx.FindChannel)
    assert sent_types(s.machine.server_key_ready(SERVER_KEY)) == [MT.INITIATE]


def stored_record(opened_in: int, **changes) -> ServerChannelRecord:
    s = server_initiated(opened_in)
    fields = dict(
        contract_txid=s.contract_txid, version=opened_in, contract=s.contract, value=VALUE, expiry=s.expiry,
        server_key=SERVER_KEY.public_key, client_key=CLIENT_KEY.public_key, best_value=MIN_PAYMENT,
        best_signature=payment_signature(s.channel, s.contract_txid, VALUE - MIN_PAYMENT),
    )
    fields.update(changes)
    return ServerChannelRecord(**fields)


def test_resume_unknown_channel_gets_initiate(version):
    """§9.2 step 4: a 32-byte hash the store does not know: SERVER_VERSION, then INITIATE."""
    s = server_fresh(version)
    out = s.receive(client_version_with_hash(version, b"\x11" * 32))
    [find] = of_kind(out, fx.FindChannel)
    assert find.contract_txid == b"\x11" * 32
    assert of_kind(s.machine.resume_not_found(), fx.NewServerKey)
    assert sent_types(s.machine.server_key_ready(SERVER_KEY)) == [MT.INITIATE]


def test_resume_known_channel_gets_channel_open(version):
    """§9.2 step 3: SERVER_VERSION, then CHANNEL_OPEN at once; no INITIATE."""
    record = stored_record(version)
    s = server_fresh(version)
    out = s.receive(client_version_with_hash(version, bytes(reversed(record.contract_txid))))
    [find] = of_kind(out, fx.FindChannel)
    assert find.contract_txid == record.contract_txid  # display order on the wire
    out = s.machine.resume_found(record)
    assert sent_types(out) == [MT.CHANNEL_OPEN] and of_kind(out, fx.ChannelOpened)[0].resumed


@pytest.mark.parametrize("why", ["other version", "not open"])
def test_resume_refused_gets_initiate(version, why):
    """§9.1 item 6 [Recommended]: resume only in the record's own version (bitcoinj rebuilds the
    channel in the stored version whatever was negotiated); a channel that is no longer open
    cannot be paid on. Both get a new channel: INITIATE."""
    changes = {"version": 3 - version} if why == "other version" else {"state": ServerChannelState.STUCK}
    record = stored_record(version, **changes)
    s = server_fresh(version)
    s.receive(client_version_with_hash(version, bytes(reversed(record.contract_txid))))
    assert of_kind(s.machine.resume_found(record), fx.NewServerKey)
    assert sent_types(s.machine.server_key_ready(SERVER_KEY)) == [MT.INITIATE]


V1_ONLY = ServerSettings(fee_rate=1000, versions=frozenset({1}))


def test_resume_after_lower_major_of_another_version_gets_initiate():
    """§3.2 with a lower major, §9.2, §13 item 27: a v1-only server asked for 2 with the hash of
    a stored v2 channel answers SERVER_VERSION{1}, looks the channel up as usual and does not
    resume it in v1 (bitcoinj would rebuild it in the stored version): INITIATE for a new v1
    channel."""
    record = stored_record(2)
    s = server_fresh(1, V1_ONLY)
    out = s.receive(client_version_with_hash(2, bytes(reversed(record.contract_txid))))
    [server_version] = sent(out)
    assert server_version.server_version.major == 1
    [find] = of_kind(out, fx.FindChannel)
    assert find.contract_txid == record.contract_txid
    assert of_kind(s.machine.resume_found(record), fx.NewServerKey)
    assert sent_types(s.machine.server_key_ready(SERVER_KEY)) == [MT.INITIATE]
    assert s.step is ServerStep.WAITING_ON_UNSIGNED_REFUND


def test_resume_after_lower_major_of_that_version_gets_channel_open():
    """The same lookup finds a stored v1 channel (a stock bitcoinj client offers any stored
    channel, whatever major it asks for): it is in the negotiated version, so it is resumed, and
    bitcoinj rebuilds it in the negotiated major, v1 (§9.1 item 6)."""
    record = stored_record(1)
    s = server_fresh(1, V1_ONLY)
    s.receive(client_version_with_hash(2, bytes(reversed(record.contract_txid))))
    out = s.machine.resume_found(record)
    assert sent_types(out) == [MT.CHANNEL_OPEN] and of_kind(out, fx.ChannelOpened)[0].resumed


# -- PROVIDE_REFUND (v1) -----------------------------------------------------------------------


def test_provide_refund_in_version_2():
    """A.1 "PROVIDE_REFUND when major != 1": bitcoinj drops; [Recommended] SYNTAX_ERROR."""
    s = server_initiated(2)
    assert_refused(s.receive(s.provide_refund()), SYNTAX, INVALID)


@pytest.mark.parametrize("step", ["before CLIENT_VERSION", "after RETURN_REFUND", "channel open"])
def test_provide_refund_in_the_wrong_step(step):
    """A.1 "PROVIDE_REFUND ... wrong step" (v1 only: v2 has no refund exchange): bitcoinj drops;
    [Recommended] SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    make = {"before CLIENT_VERSION": server_fresh, "after RETURN_REFUND": server_waiting_on_contract,
            "channel open": server_open}[step]
    s = make(1)
    msg = m.provide_refund(CLIENT_KEY.public_key, contract_tx([(1000, b"\x51")]))
    assert_refused(s.receive(msg), SYNTAX, INVALID)


def test_provide_refund_without_its_field():
    """A.1 "PROVIDE_REFUND ... field missing": bitcoinj drops; [Recommended] SYNTAX_ERROR."""
    assert_refused(server_initiated(1).receive(bare(MT.PROVIDE_REFUND)), SYNTAX, INVALID)


def _refund_cases():
    def inputs(s, n=2):
        return [(s.contract_txid, 0, 0xFFFFFFFE)] + [(bytes([i]) * 32, i, 0xFFFFFFFE) for i in range(1, n)]

    out = lambda s: (s.value - 1000, s.channel.client_change_script)  # noqa: E731
    return {
        "unparsable": lambda s: b"\x01\x00\x00\x00garbage",
        "empty": lambda s: b"",
        "fails-sanity-negative-output": lambda s: s.unsigned_refund(outputs=[(-1, b"\x51")]),
        "fails-sanity-no-outputs": lambda s: s.unsigned_refund(outputs=[]),
        "fails-sanity-over-21M-BTC": lambda s: s.unsigned_refund(outputs=[(21_000_000 * 10**8 + 1, b"\x51")]),
        "two-inputs": lambda s: s.unsigned_refund(inputs=inputs(s)),
        "same-input-twice": lambda s: s.unsigned_refund(inputs=[(s.contract_txid, 0, 0xFFFFFFFE)] * 2),
        "final-sequence": lambda s: s.unsigned_refund(inputs=[(s.contract_txid, 0, 0xFFFFFFFF)]),
        "lock-time-before-E": lambda s: s.unsigned_refund(lock_time=s.expiry - 1),
        "lock-time-0": lambda s: s.unsigned_refund(lock_time=0),
        "two-outputs": lambda s: s.unsigned_refund(outputs=[out(s), out(s)]),
    }


@pytest.mark.parametrize("case", list(_refund_cases()))
def test_provide_refund_bad_transaction(case):
    """A.1 "PROVIDE_REFUND: unparsable tx, fails sanity, inputs != 1, sequence = 0xFFFFFFFF,
    nLockTime < E, outputs != 1": BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE (v1 only).
    No RETURN_REFUND: nothing is signed."""
    s = server_initiated(1)
    assert_refused(s.receive(s.provide_refund(_refund_cases()[case](s))), BAD, INVALID)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: s.unsigned_refund(inputs=[(s.contract_txid, 0, 0)]), id="sequence-0-of-old-bitcoinj"),
        pytest.param(lambda s: s.unsigned_refund(lock_time=s.expiry + 1), id="lock-time-after-E"),
        pytest.param(lambda s: s.unsigned_refund(outputs=[(1, b"\x51")]), id="output-value-and-script-unchecked"),
    ],
)
def test_provide_refund_accepted_variants(make):
    """§5 step 5 and §13 item 21, the other side of the checks: any non-final sequence, any
    nLockTime >= E, any single output are accepted (RETURN_REFUND)."""
    s = server_initiated(1)
    assert sent_types(s.receive(s.provide_refund(make(s)))) == [MT.RETURN_REFUND]


@pytest.mark.parametrize("key", [*OFF_CURVE_KEYS.values(), HYBRID_G, b"\x02" * 32, b""],
                         ids=[*OFF_CURVE_KEYS, "hybrid-06", "32-bytes", "empty"])
def test_provide_refund_key_not_decodable(key):
    """A.1 "PROVIDE_REFUND: key not decodable": bitcoinj drops; [Recommended] (§5 intro)
    BAD_TRANSACTION for an undecodable key, and (§2.6) hybrid keys are refused too."""
    s = server_initiated(1)
    assert_refused(s.receive(s.provide_refund(key=key)), BAD, INVALID)


# -- PROVIDE_CONTRACT ---------------------------------------------------------------------------


def test_provide_contract_before_the_refund():
    """A.1 "PROVIDE_CONTRACT wrong step" (v1, before PROVIDE_REFUND): bitcoinj drops;
    [Recommended] SYNTAX_ERROR."""
    s = server_initiated(1)
    assert_refused(s.receive(s.provide_contract()), SYNTAX, INVALID)


@pytest.mark.parametrize("step", ["before CLIENT_VERSION", "during the broadcast", "channel open"])
def test_provide_contract_in_the_wrong_step(version, step):
    """A.1 "PROVIDE_CONTRACT wrong step": bitcoinj drops; [Recommended] SYNTAX_ERROR /
    REMOTE_SENT_INVALID_MESSAGE."""
    if step == "before CLIENT_VERSION":
        s, msg = server_fresh(version), server_waiting_on_contract(version).provide_contract()
    else:
        s = server_broadcasting(version) if step == "during the broadcast" else server_open(version)
        msg = s.provide_contract()
    assert_refused(s.receive(msg), SYNTAX, INVALID)


def test_provide_contract_without_its_field(version):
    """A.1 "PROVIDE_CONTRACT ... field missing": bitcoinj drops; [Recommended] SYNTAX_ERROR."""
    s = server_waiting_on_contract(version)
    assert_refused(s.receive(bare(MT.PROVIDE_CONTRACT)), SYNTAX, INVALID)


def test_provide_contract_v2_without_client_key():
    """A.1 "(v2) client_key missing" / §6 step 5.2: bitcoinj drops; [Recommended] SYNTAX_ERROR."""
    s = server_waiting_on_contract(2)
    assert_refused(s.receive(s.provide_contract(client_key=b"-")), SYNTAX, INVALID)


@pytest.mark.parametrize("key", [*OFF_CURVE_KEYS.values(), HYBRID_G, b"\x03"],
                         ids=[*OFF_CURVE_KEYS, "hybrid-06", "1-byte"])
def test_provide_contract_v2_client_key_not_decodable(key):
    """A.1 "(v2) client_key ... undecodable" / §6 step 5.3: bitcoinj drops; [Recommended]
    BAD_TRANSACTION for an undecodable key (hybrid keys refused as well, §2.6)."""
    s = server_waiting_on_contract(2)
    assert_refused(s.receive(s.provide_contract(client_key=key)), BAD, INVALID)


def test_provide_contract_v1_ignores_client_key():
    """§2.4: ``client_key`` is not sent in v1 and ignored if present: K_C comes from the refund."""
    s = server_waiting_on_contract(1)
    out = s.receive(s.provide_contract(client_key=STRANGER.public_key))
    assert [type(e) for e in out] == [fx.StoreServerChannel]  # accepted: stored, then broadcast


def _contract_cases():
    def spk(s):
        return s.channel.script_pubkey

    def redeem_hash(s):
        return hash160(s.channel.redeem_script)

    def swapped(s):
        return ChannelScript(s.version, SERVER_KEY.public_key, CLIENT_KEY.public_key, s.expiry).script_pubkey

    cases = {
        "unparsable": lambda s: b"\x01\x00\x00\x00garbage",
        "fails-sanity-negative-output": lambda s: contract_tx([(s.value, spk(s)), (-1, b"\x51")]),
        "fails-sanity-over-21M-BTC": lambda s: contract_tx([(21_000_000 * 10**8 + 1, spk(s))]),
        "output-0-pays-the-client": lambda s: contract_tx([(s.value, s.channel.client_change_script)]),
        "channel-output-at-index-1": lambda s: contract_tx([(5000, b"\x51"), (s.value, spk(s))]),
        "swapped-keys": lambda s: contract_tx([(s.value, swapped(s))]),
        "stranger-key": lambda s: contract_tx(
            [(s.value, ChannelScript(s.version, STRANGER.public_key, SERVER_KEY.public_key, s.expiry).script_pubkey)]
        ),
        "zero-value": lambda s: contract_tx([(0, spk(s))]),
        "value-below-min-channel-size": lambda s: contract_tx([(99_999, spk(s))]),
    }
    v2 = {
        "v2-other-expiry": lambda s: contract_tx(
            [(s.value, ChannelScript(2, CLIENT_KEY.public_key, SERVER_KEY.public_key, s.expiry + 1).script_pubkey)]
        ),
        "v2-p2pkh-with-the-redeem-hash": lambda s: contract_tx(
            [(s.value, bytes.fromhex("76a914") + redeem_hash(s) + bytes.fromhex("88ac"))]
        ),
        "v2-p2wpkh-with-the-redeem-hash": lambda s: contract_tx([(s.value, b"\x00\x14" + redeem_hash(s))]),
        "v2-bare-redeem-script": lambda s: contract_tx([(s.value, s.channel.redeem_script)]),
        "v2-p2sh-of-the-v1-multisig": lambda s: contract_tx(
            [(s.value, p2sh_script(ChannelScript(1, CLIENT_KEY.public_key, SERVER_KEY.public_key).script_code))]
        ),
    }
    v1 = {
        "v1-p2sh-of-the-multisig": lambda s: contract_tx([(s.value, p2sh_script(s.channel.script_code))]),
        "v1-refund-spends-another-contract": lambda s: contract_tx([(s.value, spk(s))], coin=b"\x77" * 32),
    }
    return cases, v1, v2


def _contract_params():
    cases, v1, v2 = _contract_cases()
    params = [pytest.param(v, name, id=f"v{v}-{name}") for name in cases for v in (1, 2)]
    params += [pytest.param(1, name, id=name) for name in v1]
    params += [pytest.param(2, name, id=name) for name in v2]
    return params


@pytest.mark.parametrize("version, case", _contract_params())
def test_provide_contract_bad_transaction(version, case):
    """A.1 "PROVIDE_CONTRACT: unparsable, fails sanity, output 0 script != expected (v1 multisig /
    v2 P2SH hash and bytes), value <= 0": BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE, and the
    contract is not broadcast. Two [Recommended] checks bitcoinj lacks (§5 step 7, §13 item 2)
    are in here too: V >= min_accepted_channel_size, and (v1) the refund the server signed
    spends this contract's output 0."""
    cases, v1, v2 = _contract_cases()
    s = server_waiting_on_contract(version)
    out = s.receive(s.provide_contract(tx={**cases, **v1, **v2}[case](s)))
    assert_refused(out, BAD, INVALID)
    assert not of_kind(out, fx.BroadcastContract)


# -- contract broadcast; the initial payment ---------------------------------------------------


def test_contract_broadcast_fails(version):
    """A.1 "contract broadcast fails": bitcoinj sends nothing and lets the client time out;
    [Recommended] (§5 step 7.7) ERROR{OTHER} and close. The close reason is ours:
    REMOTE_SENT_INVALID_MESSAGE (the network refused the client's contract). Nothing is
    stored; a CLOSE arriving afterwards is ignored (A.1 "CLOSE after the contract broadcast
    failed": the connection is already closed)."""
    s = server_broadcasting(version)
    out = s.machine.contract_rejected("txn-mempool-conflict")
    assert_refused(out, ErrorCode.OTHER, INVALID)
    assert not of_kind(out, fx.StoreServerChannel)
    assert_ignored(s.receive(m.close()))


def test_contract_broadcast_reaching_no_node_is_the_servers_failure(version):
    """The server's node could not be asked (down, credentials refused): ERROR{OTHER} saying so,
    closed as the server's own doing (SERVER_REQUESTED_CLOSE), never blamed on the client."""
    s = server_broadcasting(version)
    out = s.machine.contract_rejected("cannot reach http://127.0.0.1:18443: connection refused", unreachable=True)
    body = assert_refused(out, ErrorCode.OTHER, CloseReason.SERVER_REQUESTED_CLOSE)
    assert body.explanation.startswith("the server's node is unavailable: cannot reach http://127.0.0.1:18443")
    assert_ignored(s.receive(m.close()))


def _initial_payment_params():
    params = [pytest.param(name, id=f"sig-{name}") for name in BAD_PAYMENT_SIGNATURES]
    params += [
        pytest.param("c-above-V", id="c-above-V"),
        pytest.param("c-2^64-1", id="c-2^64-1"),
        pytest.param("c-dust-545", id="c-dust-545"),
        pytest.param("c-dust-1", id="c-dust-1"),
        pytest.param("below-P", id="pays-less-than-P"),
        pytest.param("pays-nothing", id="pays-nothing"),
    ]
    return params


def bad_initial_payment(s, case):
    if case in BAD_PAYMENT_SIGNATURES:
        c = s.value - MIN_PAYMENT
        return s.payment(c, BAD_PAYMENT_SIGNATURES[case](s.channel, s.contract_txid, c))
    c = {"c-above-V": s.value + 1, "c-2^64-1": 2**64 - 1, "c-dust-545": 545, "c-dust-1": 1,
         "below-P": s.value - MIN_PAYMENT + 1, "pays-nothing": s.value}[case]
    if c > s.value:  # no valid signature exists for it; any well-formed one will do
        return s.payment(c, payment_signature(s.channel, s.contract_txid, s.value - MIN_PAYMENT))
    return s.payment(c)


@pytest.mark.parametrize("case", _initial_payment_params())
def test_initial_payment_fails_a_check(version, case):
    """A.1 "initial payment fails any §7.3 check": BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE
    and no CHANNEL_OPEN. An empty signature is BAD_TRANSACTION here in bitcoinj too.
    [Recommended] (§4.2, §5 step 7.10): high S refused, and the initial payment must pay
    min(P, V).

    Our server checks the initial payment *before* it broadcasts the contract, so unlike
    bitcoinj (which has broadcast and stored a b = 0 record by then) nothing goes on chain and
    nothing is stored: there is no channel to keep. The client's refund covers its contract if
    it ever publishes it."""
    s = server_waiting_on_contract(version)
    out = s.receive(s.provide_contract(initial=bad_initial_payment(s, case)))
    assert_refused(out, BAD, INVALID)
    assert not of_kind(out, fx.BroadcastContract)


def exhausted_at_open(version):
    """A server whose initial payment of c0 = 0 has just been stored: settlement has started."""
    s = server_broadcasting(version, initial_change=0)
    out = s.machine.contract_accepted(NOW)
    [notify] = of_kind(out, fx.NotifyPayment)
    assert notify.increase == VALUE and not notify.awaited
    [settle] = of_kind(out, fx.SettleChannel)
    assert settle.reason is CloseReason.CHANNEL_EXHAUSTED
    return s, out


def test_initial_payment_exhausts_the_channel(version):
    """A.1 "initial payment with c0 = 0, valid": settle with CHANNEL_EXHAUSTED, and CHANNEL_OPEN
    is still sent, before CLOSE{settlement} (§5 step 7.10)."""
    s, opening = exhausted_at_open(version)
    out = opening + s.machine.settled(b"settlement")
    assert sent_types(out) == [MT.CHANNEL_OPEN, MT.CLOSE]
    assert sent(out)[1].settlement.tx == b"settlement"
    assert of_kind(out, fx.ChannelOpened) and close_reasons(out) == [CloseReason.CHANNEL_EXHAUSTED]


def test_initial_payment_exhausts_the_channel_fee_unaffordable(version):
    """§5 step 7.10: if the exhausting initial payment's settlement fee cannot be paid:
    ERROR{BAD_TRANSACTION} / REMOTE_SENT_INVALID_MESSAGE and no CHANNEL_OPEN."""
    s, opening = exhausted_at_open(version)
    out = opening + s.machine.settle_failed("fee above b", fee_unaffordable=True)
    assert_refused(out, BAD, INVALID)
    assert MT.CHANNEL_OPEN not in sent_types(out)
    # The channel is stored with its payment all the same: the application heard of both, in
    # that order (doc/channels.md, "What the handler hears").
    assert [type(e) for e in out if isinstance(e, (fx.ChannelOpened, fx.NotifyPayment))] == [
        fx.ChannelOpened, fx.NotifyPayment]


def test_initial_payment_exhausts_the_channel_broadcast_fails(version):
    """§5 step 7.10 with §8.2 step 7: the settlement broadcast fails: CHANNEL_OPEN has gone out
    (as in bitcoinj, where the broadcast is still running when it is sent), then nothing more;
    close with CHANNEL_EXHAUSTED."""
    s, opening = exhausted_at_open(version)
    out = opening + s.machine.settle_failed("rejected", fee_unaffordable=False)
    assert sent_types(out) == [MT.CHANNEL_OPEN]
    assert close_reasons(out) == [CloseReason.CHANNEL_EXHAUSTED]


# -- UPDATE_PAYMENT -----------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["first message", "waiting on the refund", "waiting on the contract",
                                  "during the broadcast"])
def test_update_payment_before_the_channel_is_open(version, step):
    """A.1 "UPDATE_PAYMENT before the channel is open": bitcoinj drops; [Recommended]
    SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE."""
    if step == "waiting on the refund" and version == 2:
        pytest.skip("v2 has no refund step")
    make = {"first message": server_initiated, "waiting on the refund": server_initiated,
            "waiting on the contract": server_waiting_on_contract, "during the broadcast": server_broadcasting}[step]
    s = make(version)
    msg = s.update(VALUE - 2000)
    if step == "first message":
        s = server_fresh(version)
    assert_refused(s.receive(msg), SYNTAX, INVALID)


def test_update_payment_without_its_field(version):
    """A.1 "UPDATE_PAYMENT ... field missing": bitcoinj drops; [Recommended] SYNTAX_ERROR."""
    assert_refused(server_open(version).receive(bare(MT.UPDATE_PAYMENT)), SYNTAX, INVALID)


def _update_params():
    params = [pytest.param(name, id=f"check-1-6-7-sig-{name}") for name in BAD_PAYMENT_SIGNATURES]
    params += [
        pytest.param("c-above-V", id="check-2-c-above-V"),
        pytest.param("c-2^64-1", id="check-2-c-2^64-1"),
        pytest.param("rollback", id="check-3-c-increases"),
        pytest.param("c-dust-545", id="check-4-c-dust-545"),
        pytest.param("c-dust-1", id="check-4-c-dust-1"),
        pytest.param("exhausting-flags", id="check-6-c-0-with-0x83"),
    ]
    return params


def bad_update(s, case):
    c = s.client_change - 1000
    if case in BAD_PAYMENT_SIGNATURES:
        return s.update(c, BAD_PAYMENT_SIGNATURES[case](s.channel, s.contract_txid, c))
    if case == "exhausting-flags":
        return s.update(0, payment_signature(s.channel, s.contract_txid, 0, sighash=0x83))
    if case == "rollback":
        return s.update(s.client_change + 1000)
    c = {"c-above-V": s.value + 1, "c-2^64-1": 2**64 - 1, "c-dust-545": 545, "c-dust-1": 1}[case]
    if c > s.value:
        return s.update(c, payment_signature(s.channel, s.contract_txid, s.client_change))
    return s.update(c)


@pytest.mark.parametrize("case", _update_params())
def test_update_payment_fails_a_check(version, case):
    """A.1 "UPDATE_PAYMENT failing §7.3 checks 1-7": BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE;
    nothing is stored and there is no PAYMENT_ACK. bitcoinj answers an *empty* signature with
    SYNTAX_ERROR; [Recommended] (§4.2) BAD_TRANSACTION everywhere, which we send. High S:
    [Recommended] refused (§13 item 3). (Check 5, the double-spent contract, is below.)"""
    s = server_open(version)
    out = s.receive(bad_update(s, case))
    assert_refused(out, BAD, INVALID)
    assert not of_kind(out, fx.StorePayment)


def test_update_payment_with_the_same_change_is_acked(version):
    """§7.3 check 3, "equal is allowed": an unchanged c is stored and acknowledged, without
    telling the application (no increase) and without info."""
    s = server_open(version)
    assert [type(e) for e in s.receive(s.update(s.client_change))] == [fx.StorePayment]
    out = s.machine.payment_stored()
    assert not of_kind(out, fx.NotifyPayment)
    [ack] = sent(out)
    assert ack.type == MT.PAYMENT_ACK and not ack.HasField("payment_ack")


def test_update_payment_at_the_dust_limit_is_accepted(version):
    """§7.3 check 4, the other side: c = 546 is not dust."""
    s = server_open(version)
    assert of_kind(s.receive(s.update(546)), fx.StorePayment)


def test_update_payment_on_a_double_spent_contract(version):
    """A.1 "UPDATE_PAYMENT failing §7.3 check 5": once the contract is known double-spent the
    update is refused (bitcoinj: a plain CLOSE / SERVER_REQUESTED_CLOSE, then its
    BAD_TRANSACTION is lost; A.1: BAD_TRANSACTION / REMOTE_SENT_INVALID_MESSAGE). Either way:
    no PAYMENT_ACK, the server's value does not grow, the connection closes. Simulated the way
    the store is designed for it: the record is marked CONTRACT_FAILED."""
    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=VALUE, versions=SELECTOR[version], fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    result_of(pair.server_store.transition_server(txid, ServerChannelState.OPEN, ServerChannelState.CONTRACT_FAILED))
    d = client.pay(1000)
    pair.pump()
    assert failure_of(d).check(ChannelClosed)
    assert result_of(pair.server_store.server_channel(txid)).best_value == MIN_PAYMENT
    assert pair.server_closed in (INVALID, CloseReason.SERVER_REQUESTED_CLOSE)


def test_application_refuses_the_payment(version):
    """A.1 "the application's ack future fails": OTHER / UPDATE_PAYMENT_FAILED."""
    s = server_waiting_on_application(version)
    assert_refused(s.machine.payment_ack_failed("no thanks"), ErrorCode.OTHER, CloseReason.UPDATE_PAYMENT_FAILED)


def test_update_payment_exhausts_the_channel(version):
    """A.1 "UPDATE_PAYMENT with c = 0, valid": PAYMENT_ACK (with the application's info), then
    settle with CHANNEL_EXHAUSTED: CLOSE{settlement}. [Recommended] (§7.3 step 4) the ack goes
    out before the settlement starts."""
    s = server_open(version)
    assert of_kind(s.receive(s.update(0)), fx.StorePayment)
    [notify] = s.machine.payment_stored()
    assert notify.total == VALUE
    out = s.machine.payment_acknowledged(b"receipt")
    assert sent_types(out) == [MT.PAYMENT_ACK] and sent(out)[0].payment_ack.info == b"receipt"
    assert [e.reason for e in of_kind(out, fx.SettleChannel)] == [CloseReason.CHANNEL_EXHAUSTED]
    assert out.index(of_kind(out, fx.SettleChannel)[0]) > out.index(of_kind(out, fx.Send)[0])
    out = s.machine.settled(b"settlement")
    assert sent_types(out) == [MT.CLOSE] and close_reasons(out) == [CloseReason.CHANNEL_EXHAUSTED]


def test_crafted_rollback_through_the_pair(version):
    """A.1 "UPDATE_PAYMENT failing §7.3 check 3", end to end: an open channel between our client
    and server, then a crafted UPDATE_PAYMENT that raises c. The client hears
    ERROR{BAD_TRANSACTION} (REMOTE_SENT_ERROR); the server closes REMOTE_SENT_INVALID_MESSAGE and
    keeps the channel as it was."""
    pair = Pair()
    client = pair.connect(ClientSettings(channel_value=VALUE, versions=SELECTOR[version], fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    record = result_of(pair.server_store.server_channel(txid))
    channel = ChannelScript(version, record.client_key, record.server_key, record.expiry)
    c = VALUE - MIN_PAYMENT + 1000
    key = pair.client_key
    pair.server.message_received(m.update_payment(c, payment_signature(channel, txid, c, signer=key)))
    [error] = [m.decode_message(raw) for raw in pair.to_client]
    assert error.type == MT.ERROR and error.error.code == m.ErrorCode.BAD_TRANSACTION
    pair.pump()
    assert pair.server_closed is INVALID and pair.client_closed is CloseReason.REMOTE_SENT_ERROR
    assert result_of(pair.server_store.server_channel(txid)) == record


# -- CLOSE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["first message", "waiting on the refund (v1)", "waiting on the contract (v2)"])
def test_close_with_no_channel_state(version, step):
    """A.1 "CLOSE with no channel state yet": close CLIENT_REQUESTED_CLOSE, nothing sent."""
    if step.endswith(f"(v{3 - version})"):
        pytest.skip("that step does not exist in this version")
    s = server_fresh(version) if step == "first message" else server_initiated(version)
    assert_closed_quietly(s.receive(m.close()), CloseReason.CLIENT_REQUESTED_CLOSE)


def test_close_while_waiting_for_the_server_key(version):
    """A.1 "CLOSE with no channel state yet", while the new key is being made: the CLOSE waits
    for INITIATE to go out, then closes CLIENT_REQUESTED_CLOSE with nothing more sent."""
    s = server_fresh(version)
    s.receive(m.client_version(version))
    assert_ignored(s.receive(m.close()))
    out = s.machine.server_key_ready(SERVER_KEY)
    assert sent_types(out) == [MT.INITIATE]
    assert close_reasons(out) == [CloseReason.CLIENT_REQUESTED_CLOSE]


def test_close_after_the_v1_refund_exchange():
    """A.1 "CLOSE before the channel is open (state exists: v1 after PROVIDE_REFUND)": bitcoinj
    drops; [Recommended] (§8.2 step 3) a plain CLOSE and CLIENT_REQUESTED_CLOSE."""
    s = server_waiting_on_contract(1)
    out = s.receive(m.close())
    assert [msg.HasField("settlement") for msg in sent(out)] == [False]
    assert sent_types(out) == [MT.CLOSE] and close_reasons(out) == [CloseReason.CLIENT_REQUESTED_CLOSE]


def test_close_during_the_contract_broadcast(version):
    """A.1 "CLOSE before the channel is open (... a contract broadcast in progress)": bitcoinj
    drops and then never persists the channel; [Recommended] (§8.2 step 3) a plain CLOSE /
    CLIENT_REQUESTED_CLOSE, and (§13 item 7) the channel is stored once the broadcast succeeds,
    so the client can resume it. No CHANNEL_OPEN."""
    s = server_broadcasting(version)
    out = s.receive(m.close())
    assert sent_types(out) == [MT.CLOSE] and not sent(out)[0].HasField("settlement")
    assert close_reasons(out) == [CloseReason.CLIENT_REQUESTED_CLOSE]
    # The channel was stored before the broadcast started (the stricter form of §13 item 7).
    assert s.machine.record is not None and s.machine.record.best_value == MIN_PAYMENT
    out = s.machine.contract_accepted(NOW)
    # Nothing more on the wire; the application hears of the stored channel, then its payment.
    assert sent(out) == []
    assert [type(e) for e in out] == [fx.ChannelOpened, fx.NotifyPayment]


def test_close_with_the_channel_open(version):
    """A.1 "CLOSE with the channel open": settle; CLOSE{settlement}; CLIENT_REQUESTED_CLOSE."""
    s = server_open(version)
    [settle] = s.receive(m.close())
    assert isinstance(settle, fx.SettleChannel) and settle.contract_txid == s.contract_txid
    out = s.machine.settled(b"settlement")
    assert [msg.settlement.tx for msg in sent(out)] == [b"settlement"]
    assert close_reasons(out) == [CloseReason.CLIENT_REQUESTED_CLOSE]


def test_close_with_the_channel_open_broadcast_fails(version):
    """A.1 "CLOSE with the channel open ... Broadcast failure: nothing sent" (§8.2 step 7);
    close CLIENT_REQUESTED_CLOSE."""
    s = server_settling(version)
    assert_closed_quietly(s.machine.settle_failed("rejected", fee_unaffordable=False),
                          CloseReason.CLIENT_REQUESTED_CLOSE)


def test_close_with_the_channel_open_fee_unaffordable(version):
    """A.1 "CLOSE with the channel open ... Fee unaffordable: BAD_TRANSACTION /
    REMOTE_SENT_INVALID_MESSAGE" (§8.2 step 8)."""
    s = server_settling(version)
    assert_refused(s.machine.settle_failed("fee above b", fee_unaffordable=True), BAD, INVALID)


def test_close_fee_unaffordable_keeps_the_record(version):
    """§8.2 step 8 end to end: the server's fee rate makes b = P unable to pay the settlement.
    The client hears ERROR{BAD_TRANSACTION}; the server closes REMOTE_SENT_INVALID_MESSAGE.
    bitcoinj forgets the channel here; [Recommended] (§13 item 6) keep the record: it stays,
    marked STUCK, still holding the client's signature."""
    pair = Pair(ServerSettings(fee_rate=100_000))
    client = pair.connect(ClientSettings(channel_value=VALUE, versions=SELECTOR[version], fee_rate=1000))
    txid = result_of(client.opened).contract_txid
    d = client.settle()
    pair.pump()
    assert failure_of(d).value.reason is CloseReason.REMOTE_SENT_ERROR
    assert pair.server_closed is INVALID and pair.client_closed is CloseReason.REMOTE_SENT_ERROR
    record = result_of(pair.server_store.server_channel(txid))
    assert record.state is ServerChannelState.STUCK and record.best_value == MIN_PAYMENT
    assert record.best_signature is not None


def test_close_on_a_resumed_channel_never_paid(version):
    """§8.2 step 4 ("no payment was ever accepted"): bitcoinj fails and drops; [Recommended]
    (§8.2 step 3) a plain CLOSE and CLIENT_REQUESTED_CLOSE."""
    record = stored_record(version, best_value=0, best_signature=None)
    s = server_fresh(version)
    s.receive(client_version_with_hash(version, bytes(reversed(record.contract_txid))))
    s.machine.resume_found(record)
    out = s.receive(m.close())
    assert sent_types(out) == [MT.CLOSE] and not sent(out)[0].HasField("settlement")
    assert close_reasons(out) == [CloseReason.CLIENT_REQUESTED_CLOSE]


@pytest.mark.parametrize("step", ["looking up a resume", "storing the channel", "storing a payment",
                                  "waiting on the application"])
def test_close_while_busy_is_handled_in_order(version, step):
    """B.2 "CLOSE ... handled in every step": a CLOSE that arrives while a lookup, a store or the
    application is outstanding waits its turn, then settles (the open channel's CLOSE)."""
    if step == "looking up a resume":
        record = stored_record(version)
        s = server_fresh(version)
        s.receive(client_version_with_hash(version, bytes(reversed(record.contract_txid))))
        assert_ignored(s.receive(m.close()))
        out = s.machine.resume_found(record)
        assert sent_types(out) == [MT.CHANNEL_OPEN]
    elif step == "storing the channel":
        s = server_waiting_on_contract(version)
        s.receive(s.provide_contract(initial=s.payment(s.value - MIN_PAYMENT)))
        assert_ignored(s.receive(m.close()))
        out = s.machine.channel_stored()
        # The queued CLOSE comes next: the channel is stored but not open, so a plain CLOSE.
        assert of_kind(out, fx.BroadcastContract) and sent_types(out) == [MT.CLOSE]
        return
    else:
        s = server_storing_payment(version) if step == "storing a payment" else server_waiting_on_application(version)
        assert_ignored(s.receive(m.close()))
        out = s.machine.payment_stored() if step == "storing a payment" else []
        out += s.machine.payment_acknowledged(None)
        assert sent_types(out) == [MT.PAYMENT_ACK]
    assert [e.reason for e in of_kind(out, fx.SettleChannel)] == [CloseReason.CLIENT_REQUESTED_CLOSE]


# -- ERROR ----------------------------------------------------------------------------------------


STEPS = {
    "first message": server_fresh,
    "after INITIATE": server_initiated,
    "waiting on the contract": server_waiting_on_contract,
    "during the broadcast": server_broadcasting,
    "channel open": server_open,
}


@pytest.mark.parametrize("step", list(STEPS))
def test_error_closes_quietly(version, step):
    """A.1 "ERROR (with the error field)": close REMOTE_SENT_ERROR, nothing sent (§8.5)."""
    s = STEPS[step](version)
    out = s.receive(m.error(m.ErrorCode.TIME_WINDOW_UNACCEPTABLE, "too late"))
    assert_closed_quietly(out, CloseReason.REMOTE_SENT_ERROR)
    assert "TIME_WINDOW_UNACCEPTABLE" in out[-1].detail


@pytest.mark.parametrize("step", list(STEPS))
def test_error_without_its_field(version, step):
    """A.1 "ERROR without the error field": bitcoinj drops; [Recommended] SYNTAX_ERROR /
    REMOTE_SENT_INVALID_MESSAGE."""
    assert_refused(STEPS[step](version).receive(bare(MT.ERROR)), SYNTAX, INVALID)


# -- messages only a server sends -----------------------------------------------------------------


@pytest.mark.parametrize("step", ["first message", "after INITIATE", "channel open"])
@pytest.mark.parametrize("name", list(SERVER_ONLY))
def test_server_to_client_message(version, step, name):
    """A.1 "SERVER_VERSION, INITIATE, RETURN_REFUND, CHANNEL_OPEN, PAYMENT_ACK" from a client:
    SYNTAX_ERROR / REMOTE_SENT_INVALID_MESSAGE, in any step."""
    assert_refused(STEPS[step](version).receive(SERVER_ONLY[name]), SYNTAX, INVALID)


# -- below the machine: the framing ----------------------------------------------------------------


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_frame_that_is_not_a_message(frame):
    """A.1 "oversize frame, unparsable protobuf, unknown type": the connection is closed and the
    machine never sees it. bitcoinj sends nothing; our framing writes ERROR{SYNTAX_ERROR} first,
    which §1.3 [Recommended] allows ("allowed and harmless"). Details: tests/wire."""
    assert_frame_stops_at_the_framing(server_fresh(2), frame, m.client_version(2))
