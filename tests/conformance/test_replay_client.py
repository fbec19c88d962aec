"""
Our ClientMachine replayed in the place of the recorded bitcoinj client (../shared/vectors).

It gets the recorded client's channel key and settings, the server's recorded clock (both peers
ran on one host), the contract bitcoinj's wallet built as the answer to FundContract (coin choice
is the wallet's, not the protocol's), and the recorded server's messages in their recorded order;
the application pays what the recorded one paid (client1.jsonl ``ack``/``noAck``: ``requested``,
``sent_info``). Every message bitcoinj's client put on the wire must come out of ours byte for
byte, at the same point: CLIENT_VERSION, (v1) PROVIDE_REFUND with the unsigned refund,
PROVIDE_CONTRACT with the initial payment's signature (and the client key in v2), each
UPDATE_PAYMENT with its info, and the final CLOSE. The refund we store is bitcoinj's, byte for
byte, and Bitcoin Core's interpreter accepts it.

The recordings end in EOF where the server's last messages were lost (PROTOCOL.md §1.4); we check
both that EOF ends our client the way the spec says, and that the messages bitcoinj's server had
queued (CLOSE with the recorded settlement) would have been taken.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Optional

import pytest

from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin import transactions as tx_mod
from twisted_paychan.bitcoin.keys import KeySigner
from twisted_paychan.bitcoin.txid import txid
from twisted_paychan.chain.types import OutPoint
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.channel.client import ClientStep
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.channel.settings import VersionSelector
from twisted_paychan.wire import messages as m

from replay_helpers import CHANNEL_FOLDERS, VECTORS, VERSION_FOLDER, ClientReplay, Recording, load

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"recordings not found at {VECTORS}")

MT = m.MessageType
channel_folders = pytest.mark.parametrize("folder", CHANNEL_FOLDERS)
#: The recordings that end with the exhausting payment and EOF (its ack and CLOSE lost, §1.4).
EXHAUST_FOLDERS = [f for f in CHANNEL_FOLDERS if f.endswith("_exhaust")]


def _show(payload: bytes) -> str:
    return f"{payload.hex()}\n{m.decode_message(payload)}"


def _info(hex_info: Optional[str]) -> Optional[bytes]:
    return None if hex_info is None else bytes.fromhex(hex_info)


def replay(rec: Recording, lost_close: bool = False, ack_lost: bool = False, **kwargs: object) -> ClientReplay:
    """Walk the recording in order, acting as the recorded client application did, and match
    our machine's output against bitcoinj's.

    The application acts when bitcoinj's client sent something our machine has not been asked
    for: the next payment (client1.jsonl order) for an UPDATE_PAYMENT, ``settle()`` for a CLOSE.
    With ``lost_close`` what bitcoinj's server queued and lost arrives before the recorded EOF:
    on exhaustion the last PAYMENT_ACK (unless ``ack_lost``: the CLOSE overtook it), then the
    CLOSE with the settlement it broadcast."""
    r = ClientReplay(rec, **kwargs)  # type: ignore[arg-type]
    payments = iter(rec.payments())
    for entry in rec.wire:
        where = f"{rec.name}/wire.jsonl line {entry.line}"
        if entry.event == "open":
            r.carry_out(r.machine.start())
        elif entry.payload is not None and entry.dir == "s2c":
            assert not r.outbox, f"{where}: we sent, before the server's next message:\n" + "\n".join(
                _show(p) for p in r.outbox
            )
            r.receive(entry.payload)
        elif entry.payload is not None:
            if not r.outbox:
                kind = entry.message.type
                if kind == MT.UPDATE_PAYMENT:
                    paid = next(payments)
                    r.carry_out(r.machine.pay(paid["requested"], _info(paid["sent_info"]), r.now))
                elif kind == MT.CLOSE:
                    r.carry_out(r.machine.settle())
            assert r.outbox, f"{where}: bitcoinj sent, and we did not:\n{_show(entry.payload)}"
            ours = r.outbox.popleft()
            assert ours == entry.payload, f"{where}: bitcoinj sent\n{_show(entry.payload)}\nwe sent\n{_show(ours)}"
        elif entry.event == "eof" and entry.dir == "s2c":
            assert not r.outbox
            if lost_close:
                if rec.payments()[-1]["event"] == "noAck" and not ack_lost:
                    r.receive(m.encode_message(m.payment_ack()))
                r.receive(m.encode_message(m.close(rec.settlement_raw)))
            r.carry_out(r.machine.connection_lost())
    assert next(payments, None) is None, "a recorded payment was never made"
    assert not r.outbox
    assert len(r.closes) == 1, r.closes
    return r


@channel_folders
def test_every_recorded_client_message_byte_for_byte(folder: str) -> None:
    """``replay`` does the matching; here, that it covered the whole conversation."""
    rec = load(folder)
    r = replay(rec)
    v1 = rec.server_key["version"] == 1
    types = [m.decode_message(p).type for p in rec.sent("c2s")]
    opening = [MT.CLIENT_VERSION] + ([MT.PROVIDE_REFUND] if v1 else []) + [MT.PROVIDE_CONTRACT]
    assert types[: len(opening)] == opening
    closing = [MT.CLOSE] if types[-1] == MT.CLOSE else []
    assert types[len(opening): len(types) - len(closing)] == [MT.UPDATE_PAYMENT] * len(rec.payments())
    assert r.machine.step is ClientStep.CHANNEL_CLOSED


@channel_folders
def test_funding_request_is_the_recorded_channel_output(folder: str) -> None:
    """FundContract asks for the recorded contract's output 0: the channel script from the two
    keys and E, and V."""
    rec = load(folder)
    r = replay(rec)
    contract = tx_mod.parse_transaction(rec.contract_raw)
    [asked] = r.funding_asked
    assert asked.script_pubkey == bytes(contract.vout[0].scriptPubKey) == rec.channel().script_pubkey
    assert asked.value == contract.vout[0].nValue == rec.client_event("connecting")["value"]


@channel_folders
def test_stored_refund_is_bitcoinjs(folder: str) -> None:
    """The refund stored before the contract leaves (§11.1) is the one bitcoinj's client kept:
    v1 signed by both after RETURN_REFUND, v2 by the client alone at once; Bitcoin Core
    accepts it (after E, as its lock time says)."""
    rec = load(folder)
    r = replay(rec)
    record = r.stored[0]
    opened = rec.client_event("channelOpen")
    assert record.refund == bytes.fromhex(opened["refund_tx"])
    assert record.contract == rec.contract_raw and record.contract_txid == txid(rec.contract_raw)
    assert (record.version, record.value) == (opened["version"], opened["total_value"])
    assert record.client_change == opened["value_refunded"]
    assert record.expiry == rec.server_key["expire_time"] == tx_mod.parse_transaction(record.refund).nLockTime
    assert record.refund_fees == rec.funded_contract().fee + 1000
    assert consensus.verify_input(record.refund, 0, rec.channel().script_pubkey, record.value)


@channel_folders
def test_payments_and_acks(folder: str) -> None:
    """Each payment is stored before it is sent, and acked with the info bitcoinj's client saw
    (the server echoed the payment's info). The exhausting payment whose ack bitcoinj's server
    lost (``noAck``) counts as paid, with no info (§7.3 step 4)."""
    rec = load(folder)
    r = replay(rec)
    expected = [(e["amount"], _info(e["info"])) if e["event"] == "ack" else (e["requested"], None)
                for e in rec.payments()]
    assert [(a.amount, a.info) for a in r.acked] == expected
    changes = [s.client_change for s in r.stored[1:]]
    assert changes == [e["value_refunded"] for e in rec.payments()]
    assert r.machine.record is not None and r.machine.record.client_change == changes[-1]


@channel_folders
def test_recorded_end(folder: str) -> None:
    """The recordings end with EOF: after our CLOSE it means "the server probably settled",
    after the exhausting payment "paid, and settled by the server" (§7.3 step 4, §1.4; the
    payment's ack never came, as in bitcoinj's ``noAck``, and it counts as paid)."""
    rec = load(folder)
    r = replay(rec)
    exhausted = rec.payments()[-1]["event"] == "noAck"
    expected = CloseReason.CHANNEL_EXHAUSTED if exhausted else CloseReason.CLIENT_REQUESTED_CLOSE
    assert r.closes[0].reason is expected
    assert r.settlements_seen == []
    assert not r.machine.payment_in_flight and len(r.acked) == len(rec.payments())
    assert r.machine.exhausted is exhausted


@channel_folders
def test_lost_close_with_the_recorded_settlement(folder: str) -> None:
    """Had bitcoinj's server's last messages reached the wire (§1.4), our client would have
    taken the exhausting payment's ack and the recorded settlement (§8.3), and closed with the
    reason §8.3 step 4 gives."""
    rec = load(folder)
    r = replay(rec, lost_close=True)
    [seen] = r.settlements_seen
    assert seen.tx == rec.settlement_raw and seen.contract_txid == txid(rec.contract_raw)
    exhausted = rec.payments()[-1]["event"] == "noAck"
    assert len(r.acked) == len(rec.payments())
    assert not r.machine.payment_in_flight
    expected = CloseReason.CHANNEL_EXHAUSTED if exhausted else CloseReason.CLIENT_REQUESTED_CLOSE
    assert r.closes[0].reason is expected


@pytest.mark.parametrize("folder", EXHAUST_FOLDERS)
def test_close_overtaking_the_exhausting_ack(folder: str) -> None:
    """The server's CLOSE{settlement} arrives and its PAYMENT_ACK never does (§7.3 step 4
    [bitcoinj]): the exhausting payment counts as paid, the settlement is taken, and the close
    reason is CHANNEL_EXHAUSTED, as in every other ending of an exhausted channel."""
    rec = load(folder)
    r = replay(rec, lost_close=True, ack_lost=True)
    [seen] = r.settlements_seen
    assert seen.tx == rec.settlement_raw
    assert [a.amount for a in r.acked][-1] == rec.payments()[-1]["requested"]
    assert len(r.acked) == len(rec.payments()) and not r.machine.payment_in_flight
    assert r.closes[0].reason is CloseReason.CHANNEL_EXHAUSTED


@pytest.mark.parametrize("folder", EXHAUST_FOLDERS)
def test_exhausted_recording_settled_from_the_chain(folder: str) -> None:
    """After the recorded EOF, the client's lifecycle notes the open channel as exhausted and
    watches its contract output; bitcoinj's recorded settlement spending it (as it appears in the
    mempool) ends the channel SETTLED with that transaction, which pays our change of 0 (no
    note)."""
    rec = load(folder)
    r = replay(rec)
    record = replace(r.stored[0], client_change=r.stored[-1].client_change)
    assert record.client_change == 0
    machine = lc.ClientLifecycle()
    assert machine.handle(lc.Loaded(record, refunds=False)) == []
    effects = machine.handle(lc.SettlementAwaited(exhausted=True, now=r.now))
    assert lc.WatchOutpoint(OutPoint(record.contract_txid, 0)) in effects
    [noting] = [e for e in effects if isinstance(e, lc.PersistTransition)]
    assert (noting.expected, noting.new, noting.changes["note"]) == (
        ClientChannelState.OPEN, ClientChannelState.OPEN, lc.EXHAUSTED_NOTE)
    machine.handle(lc.TransitionStored(replace(record, note=lc.EXHAUSTED_NOTE)))
    effects = machine.handle(lc.ContractSpent(rec.settlement_raw, False, r.now, 0))
    [settling] = [e for e in effects if isinstance(e, lc.PersistTransition)]
    assert (settling.expected, settling.new) == (ClientChannelState.OPEN, ClientChannelState.SETTLED)
    assert settling.changes["close_tx"] == rec.settlement_raw and settling.changes["note"] == ""


def test_v2_or_1_client_against_a_v1_only_server() -> None:
    """c2: our VERSION_2_ALLOW_1 client asks for major 2 with bitcoinj's bytes; the server's
    ERROR was lost (§1.4) and EOF ends the connection, as it did bitcoinj's client
    (``CONNECTION_CLOSED``). The recording has no client channel key (none was drawn): any key
    will do, nothing is signed."""
    rec = load(VERSION_FOLDER)
    assert rec.client_settings().versions is VersionSelector.VERSION_2_ALLOW_1
    signer = KeySigner(hashlib.sha256(b"c2 client key, never used").digest())
    r = replay(rec, signer=signer, clock=0)
    assert r.closes[0].reason is CloseReason.CONNECTION_CLOSED
    assert rec.client_event("error")["reason"] == "CONNECTION_CLOSED"
    assert r.funding_asked == [] and r.stored == []

    # Had the server's ERROR{NO_ACCEPTABLE_VERSION} arrived, the client would close on it.
    r = ClientReplay(rec, signer=signer, clock=0)
    r.carry_out(r.machine.start())
    r.receive(m.encode_message(m.error(m.ErrorCode.NO_ACCEPTABLE_VERSION, "server speaks majors [1]")))
    assert [c.reason for c in r.closes] == [CloseReason.REMOTE_SENT_ERROR]
