"""
Every message two stock bitcoinj peers exchanged (../shared/vectors, README there) must decode,
re-encode byte for byte, be built identically by our constructors, travel in a direction the
spec allows (PROTOCOL.md §2.3), and come out of our framing intact however the stream is cut.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import StringTransport

from twisted_paychan.constants import MAX_MESSAGE_SIZE
from twisted_paychan.wire import messages as m
from twisted_paychan.wire.framing import MessageProtocol

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
FOLDERS = (
    sorted(p.name for p in VECTORS.iterdir() if (p / "wire.jsonl").is_file())
    if VECTORS.is_dir()
    else []
)

LEGAL = {"c2s": m.SENT_BY_CLIENT, "s2c": m.SENT_BY_SERVER}


@dataclass(frozen=True)
class Recorded:
    line: int
    conn: int
    dir: str
    length: int
    payload: bytes


def recorded(folder: str) -> list[Recorded]:
    out = []
    with open(VECTORS / folder / "wire.jsonl") as f:
        for number, line in enumerate(f, 1):
            entry = json.loads(line)
            if "hex" in entry:
                payload = bytes.fromhex(entry["hex"])
                out.append(Recorded(number, entry["conn"], entry["dir"], entry["len"], payload))
    return out


def _opt(body: Any, field: str) -> Any:
    return getattr(body, field) if body.HasField(field) else None


def rebuild(msg: m.TwoWayChannelMessage) -> m.TwoWayChannelMessage:
    """The same message made with our constructors, from its decoded fields."""
    T = m.MessageType
    t = msg.type
    if t == T.CLIENT_VERSION:
        cv = msg.client_version
        previous = _opt(cv, "previous_channel_contract_hash")
        return m.client_version(cv.major, cv.time_window_secs, previous, cv.minor)
    if t == T.SERVER_VERSION:
        return m.server_version(msg.server_version.major, msg.server_version.minor)
    if t == T.INITIATE:
        i = msg.initiate
        return m.initiate(
            i.multisig_key, i.min_accepted_channel_size, i.expire_time_secs, i.min_payment
        )
    if t == T.PROVIDE_REFUND:
        return m.provide_refund(msg.provide_refund.multisig_key, msg.provide_refund.tx)
    if t == T.RETURN_REFUND:
        return m.return_refund(msg.return_refund.signature)
    if t == T.PROVIDE_CONTRACT:
        pc = msg.provide_contract
        p = pc.initial_payment
        initial = m.payment(p.client_change_value, p.signature, _opt(p, "info"))
        return m.provide_contract(pc.tx, initial, _opt(pc, "client_key"))
    if t == T.CHANNEL_OPEN:
        return m.channel_open()
    if t == T.UPDATE_PAYMENT:
        up = msg.update_payment
        return m.update_payment(up.client_change_value, up.signature, _opt(up, "info"))
    if t == T.CLOSE:
        return m.close(msg.settlement.tx if msg.HasField("settlement") else None)
    if t == T.ERROR:
        e = msg.error
        return m.error(e.code, _opt(e, "explanation"), _opt(e, "expected_value"))
    if t == T.PAYMENT_ACK:
        return m.payment_ack(msg.payment_ack.info if msg.HasField("payment_ack") else None)
    raise AssertionError(f"unexpected type {t}")


def test_vectors_present() -> None:
    assert VECTORS.is_dir(), f"recordings not found at {VECTORS}"
    assert len(FOLDERS) >= 5, f"expected five recorded conversations in {VECTORS}: {FOLDERS}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_recorded_message(folder: str) -> None:
    entries = recorded(folder)
    assert entries, folder
    for r in entries:
        where = f"{folder}/wire.jsonl line {r.line}"
        assert r.length == len(r.payload) <= MAX_MESSAGE_SIZE, where
        msg = m.decode_message(r.payload)
        assert m.encode_message(msg) == r.payload, where
        assert msg.type in LEGAL[r.dir], f"{where}: {m.type_name(msg.type)} not legal {r.dir}"
        field = m.PAYLOAD_FIELD[msg.type]
        if field is not None and msg.type not in (m.MessageType.CLOSE, m.MessageType.PAYMENT_ACK):
            assert msg.HasField(field), where  # type: ignore[arg-type]
        assert m.encode_message(rebuild(msg)) == r.payload, f"{where}: constructor bytes differ"


class Collector(MessageProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    def messageReceived(self, msg: m.TwoWayChannelMessage) -> None:
        self.received.append(m.encode_message(msg))


def _streams(folder: str) -> dict[tuple[int, str], list[bytes]]:
    streams: dict[tuple[int, str], list[bytes]] = {}
    for r in recorded(folder):
        streams.setdefault((r.conn, r.dir), []).append(r.payload)
    return streams


def _chunkings(size: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    plans = [[1] * size, [size]]  # byte by byte, and all at once
    for _ in range(20):
        plan = []
        left = size
        while left:
            n = min(left, rng.choice([1, 2, 3, 4, 5, rng.randint(1, 64), rng.randint(1, 600)]))
            plan.append(n)
            left -= n
        plans.append(plan)
    return plans


@pytest.mark.parametrize("folder", FOLDERS)
def test_recorded_streams_through_framing(folder: str) -> None:
    for (conn, direction), payloads in _streams(folder).items():
        stream = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
        seed = zlib.crc32(f"{folder}/{conn}/{direction}".encode())
        for plan in _chunkings(len(stream), seed):
            proto = Collector()
            transport = StringTransport()
            proto.makeConnection(transport)
            offset = 0
            for n in plan:
                proto.dataReceived(stream[offset : offset + n])
                offset += n
            assert proto.received == payloads, (folder, conn, direction, plan[:10])
            assert transport.value() == b"" and not transport.disconnecting
