"""The payment log and how the SQLite store uses it: replay after a crash, stale and torn slots,
checkpoints, reads through the overlay, and a failed sync."""

import os

import pytest

from store_conformance import client_record, server_record
from twisted_paychan.store import paylog
from twisted_paychan.store.interfaces import ChannelNotOpen, StoreError, TransitionConflict
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState
from twisted_paychan.channel.states import IllegalTransition
from twisted_paychan.store.sqlite import SqliteChannelStore

TXID = server_record(1).contract_txid


def result(d):
    out = []
    d.addBoth(out.append)
    return out[0]


def crash(store: SqliteChannelStore) -> None:
    """Drop the store the way a SIGKILL would: no checkpoint, no clean close."""
    store._paylog.close()
    store._db.close()
    store._lock_file.close()


def test_slots_round_trip_and_stop_at_another_generation():
    data = b"".join(
        [paylog.encode_slot(5, paylog.SERVER_PAYMENT, TXID, n, b"\x30" * 71 + b"\x01") for n in (1, 2)]
        + [paylog.encode_slot(4, paylog.SERVER_PAYMENT, TXID, 9, b"old")]
        + [paylog.encode_slot(5, paylog.CLIENT_CHANGE, TXID, 7)]
    )
    got = list(paylog.decode_slots(data, 5))
    assert [(r.kind, r.value) for r in got] == [(paylog.SERVER_PAYMENT, 1), (paylog.SERVER_PAYMENT, 2)]
    assert got[0].signature == b"\x30" * 71 + b"\x01"
    assert list(paylog.decode_slots(data, 4)) == []


def test_a_torn_slot_ends_the_log():
    good = paylog.encode_slot(1, paylog.CLIENT_CHANGE, TXID, 10)
    torn = bytearray(paylog.encode_slot(1, paylog.CLIENT_CHANGE, TXID, 9))
    torn[60] ^= 0xFF
    later = paylog.encode_slot(1, paylog.CLIENT_CHANGE, TXID, 8)
    assert [r.value for r in paylog.decode_slots(good + bytes(torn) + later, 1)] == [10]
    assert list(paylog.decode_slots(b"\0" * 512, 1)) == []


def test_payments_in_the_log_survive_a_crash(tmp_path):
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path)
    s.add_server_channel(server_record(1))
    s.add_client_channel(client_record(2))
    for b in range(1, 6):
        assert result(s.record_payment(TXID, b, b"sig%d" % b)) is None
    assert result(s.record_client_change(client_record(2).contract_txid, 400_000)) is None
    assert s._overlay, "the payments should be in the log, not yet in the tables"
    crash(s)
    s = SqliteChannelStore(path)
    rec = result(s.server_channel(TXID))
    assert (rec.best_value, rec.best_signature) == (5, b"sig5")
    assert result(s.client_channel(client_record(2).contract_txid)).client_change == 400_000
    assert not s._overlay, "opening absorbs the log into the tables"
    # A second crash right away must not replay the (now stale) slots over newer values.
    s.record_payment(TXID, 6, b"sig6")
    crash(s)
    s = SqliteChannelStore(path)
    assert result(s.server_channel(TXID)).best_value == 6
    s.close()


def test_stale_slots_of_an_absorbed_generation_are_not_replayed(tmp_path):
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path)
    s.add_server_channel(server_record(1))
    for b in range(1, 11):
        s.record_payment(TXID, b, b"s")
    s.transition_server(TXID, ServerChannelState.OPEN, ServerChannelState.SETTLING)  # a SQLite write absorbs the log
    assert s._paylog.used == 0
    crash(s)
    s = SqliteChannelStore(path)
    rec = result(s.server_channel(TXID))
    assert (rec.best_value, rec.state) == (10, ServerChannelState.SETTLING)
    s.close()


def test_reads_and_full_records_see_logged_payments(tmp_path):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"))
    s.add_server_channel(server_record(1))
    s.record_payment(TXID, 700, b"sig")
    assert [r.best_value for r in result(s.server_channels())] == [700]
    # A transition after logged payments: the log is absorbed first, then the change; and the
    # state change is seen by the next payment (the cached table state is dropped).
    s.transition_server(TXID, ServerChannelState.OPEN, ServerChannelState.SETTLING, note="hello")
    rec = result(s.server_channel(TXID))
    assert (rec.best_value, rec.note, rec.state) == (700, "hello", ServerChannelState.SETTLING)
    assert result(s.record_payment(TXID, 800, b"x")).check(ChannelNotOpen)
    s.close()


def test_a_transition_absorbs_logged_payments_and_survives_a_crash(tmp_path):
    """The payments a transition finds only in the log are in the record it returns and in the
    tables it commits, in the same transaction: a crash right after loses neither."""
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path)
    s.add_server_channel(server_record(1))
    s.add_client_channel(client_record(2))
    ctxid = client_record(2).contract_txid
    for b in range(1, 6):
        s.record_payment(TXID, b, b"sig%d" % b)
    s.record_client_change(ctxid, 300_000)
    assert s._overlay and s._paylog.used == 6, "the payments should be only in the log"
    rec = result(s.transition_server(TXID, ServerChannelState.OPEN, ServerChannelState.SETTLING, note="operator"))
    assert (rec.state, rec.best_value, rec.best_signature) == (ServerChannelState.SETTLING, 5, b"sig5")
    assert not s._overlay and s._paylog.used == 0
    assert result(s.record_payment(TXID, 6, b"sig6")).check(ChannelNotOpen)
    s.record_client_change(ctxid, 200_000)  # logged again, then absorbed by the next transition
    crec = result(s.transition_client(ctxid, ClientChannelState.OPEN, ClientChannelState.EXPIRING))
    assert crec.client_change == 200_000
    assert result(s.record_client_change(ctxid, 250_000)).check(StoreError)
    crash(s)
    s = SqliteChannelStore(path)
    assert result(s.server_channel(TXID)) == rec
    assert result(s.client_channel(ctxid)) == crec
    s.close()


def test_a_refused_transition_leaves_logged_payments_readable(tmp_path):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"))
    s.add_server_channel(server_record(1))
    s.record_payment(TXID, 7, b"sig7")
    assert result(s.transition_server(TXID, ServerChannelState.SETTLING, ServerChannelState.STUCK)).check(
        TransitionConflict)
    assert result(s.transition_server(TXID, ServerChannelState.OPEN, ServerChannelState.STUCK)).check(
        IllegalTransition)
    rec = result(s.server_channel(TXID))
    assert (rec.state, rec.best_value, rec.best_signature) == (ServerChannelState.OPEN, 7, b"sig7")
    assert result(s.record_payment(TXID, 8, b"sig8")) is None
    s.close()


def test_a_full_log_checkpoints(tmp_path):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"), log_slots=3)
    s.add_server_channel(server_record(1))
    for b in range(1, 11):
        assert result(s.record_payment(TXID, b, b"s")) is None
        assert s._paylog.used <= 3
    assert result(s.server_channel(TXID)).best_value == 10
    s.close()


def test_a_failed_sync_fails_the_write_and_stops_the_store(tmp_path, monkeypatch):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"))
    s.add_server_channel(server_record(1))
    s.record_payment(TXID, 5, b"s")

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    assert result(s.record_payment(TXID, 6, b"t")).check(StoreError)
    monkeypatch.undo()
    # Nothing more is accepted, and what was durable before is still what reads say.
    assert result(s.record_payment(TXID, 7, b"u")).check(StoreError)
    assert s._overlay[(paylog.SERVER_PAYMENT, TXID)] == (5, b"s")


def test_a_signature_too_long_for_a_slot_goes_through_sqlite(tmp_path):
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"))
    s.add_server_channel(server_record(1))
    assert result(s.record_payment(TXID, 5, b"x" * 100)) is None
    assert s._paylog.used == 0
    assert result(s.server_channel(TXID)).best_signature == b"x" * 100
    s.close()


@pytest.mark.parametrize("before, after", [(8, paylog.DEFAULT_SLOTS), (64, 4)])
def test_a_log_of_another_capacity_is_replayed_then_remade(tmp_path, before, after):
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path, log_slots=before)
    s.add_server_channel(server_record(1))
    for b in range(1, 11):  # ten slots: more than the smaller log holds
        s.record_payment(TXID, b, b"s")
    crash(s)
    s = SqliteChannelStore(path, log_slots=after)
    assert os.path.getsize(path + "-paylog") == after * paylog.SLOT_SIZE
    assert result(s.server_channel(TXID)).best_value == 10
    s.close()


def test_the_log_is_remade_only_after_its_records_are_in_the_tables(tmp_path, monkeypatch):
    path = str(tmp_path / "c.sqlite")
    s = SqliteChannelStore(path, log_slots=8)
    s.add_server_channel(server_record(1))
    s.record_payment(TXID, 5, b"s")
    crash(s)

    def crash_on_remake(self, size):
        raise SystemExit("killed while remaking the log")

    monkeypatch.setattr(paylog.PaymentLog, "_create", crash_on_remake)
    with pytest.raises(SystemExit):
        SqliteChannelStore(path, log_slots=16)
    monkeypatch.undo()
    s = SqliteChannelStore(path, log_slots=16)
    assert result(s.server_channel(TXID)).best_value == 5
    s.close()


def test_totals_count_the_payments_still_in_the_log(tmp_path):
    """``server_totals`` sums b in SQL over the table; a payment only in the log is added to it."""
    s = SqliteChannelStore(str(tmp_path / "c.sqlite"))
    s.add_server_channel(server_record(1))
    for b in (3, 9):
        assert result(s.record_payment(TXID, b, b"sig%d" % b)) is None
    assert s._overlay, "the payments should be in the log, not yet in the tables"
    assert result(s.server_totals()).paid_to_us == 9
    s._checkpoint()
    assert not s._overlay
    assert result(s.server_totals()).paid_to_us == 9
