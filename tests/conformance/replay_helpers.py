"""Loading a bitcoinj recording (../shared/vectors, README there) for a replay against our
state machines, and the small in-test adapters that answer the machines' effects the way the
recorded peer's application did.

A recording gives, besides the wire bytes, every key and the server's clock, so each machine can
be put in exactly the recorded peer's position: the server gets ``serverChannelKey`` for
``NewServerKey`` and ``now`` for its clock; the client gets ``clientChannelKey`` and, for
``FundContract``, the contract the bitcoinj wallet built (coin choice is the wallet's business,
not the protocol's).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from twisted_paychan import constants as C
from twisted_paychan.bitcoin import transactions as tx_mod
from twisted_paychan.bitcoin.keys import KeySigner
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.settlement import Settlement, build_settlement
from twisted_paychan.bitcoin.txid import txid
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel.client import ClientMachine
from twisted_paychan.channel.server import ServerMachine
from twisted_paychan.channel.settings import ClientSettings, ServerSettings, VersionSelector
from twisted_paychan.wire import messages as m
from twisted_paychan.wire import received

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"

#: Every recording that opened a channel, and the one that never got past the version.
CHANNEL_FOLDERS = ("a2_v1_open_pay5_settle", "b2_v2_open_pay5_settle", "f_v2_exhaust", "g_v1_exhaust")
VERSION_FOLDER = "c2_v2or1_client_vs_v1_only_server"


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class WireEntry:
    """One line of wire.jsonl: a message (``dir`` c2s/s2c, ``payload``) or an open/eof event."""

    line: int
    dir: Optional[str]
    payload: Optional[bytes]
    event: Optional[str]

    @property
    def message(self) -> Any:
        assert self.payload is not None
        return m.decode_message(self.payload)


@dataclass
class Recording:
    name: str
    wire: list[WireEntry]
    server_events: list[dict[str, Any]]
    client_events: list[dict[str, Any]]
    broadcasts: list[dict[str, Any]]

    def server_event(self, name: str) -> dict[str, Any]:
        return _only(self.server_events, name)

    def client_event(self, name: str) -> dict[str, Any]:
        return _only(self.client_events, name)

    def sent(self, direction: str) -> list[bytes]:
        return [e.payload for e in self.wire if e.dir == direction and e.payload is not None]

    # -- the server's position ----------------------------------------------------------------

    @property
    def has_server_key(self) -> bool:
        return any(e.get("event") == "serverChannelKey" for e in self.server_events)

    @property
    def server_key(self) -> dict[str, Any]:
        return self.server_event("serverChannelKey")

    @property
    def server_now(self) -> int:
        return int(self.server_key["now"])

    @property
    def server_signer(self) -> KeySigner:
        key = self.server_key
        signer = KeySigner(bytes.fromhex(key["privkey"]))
        assert signer.public_key.hex() == key["pubkey"]
        return signer

    def server_settings(self) -> ServerSettings:
        listening = self.server_event("listening")
        return ServerSettings(
            min_channel_size=listening["min_channel"],
            min_payment=listening["min_payment"],
            fee_rate=listening["fee_per_kb"],
            versions=frozenset(listening["versions"]),
        )

    # -- the client's position ----------------------------------------------------------------

    @property
    def client_signer(self) -> KeySigner:
        key = self.client_event("clientChannelKey")
        signer = KeySigner(bytes.fromhex(key["privkey"]))
        assert signer.public_key.hex() == key["pubkey"]
        return signer

    @property
    def server_id(self) -> bytes:
        connecting = self.client_event("connecting")
        server_id = hashlib.sha256(connecting["server_id"].encode()).digest()
        assert server_id.hex() == connecting["server_id_hash"]
        return server_id

    def client_settings(self) -> ClientSettings:
        connecting = self.client_event("connecting")
        return ClientSettings(
            channel_value=connecting["value"],
            # bitcoinj's default window; the server recorded it as client_time_window.
            time_window=C.DEFAULT_CLIENT_TIME_WINDOW,
            max_min_payment=1000,
            versions=VersionSelector(connecting["version"]),
            fee_rate=1000,  # client1.jsonl feeRate, where the client got as far as funding
        )

    def payments(self) -> list[dict[str, Any]]:
        """The client application's payments after the initial one, in order (``ack`` or
        ``noAck``): ``requested`` and ``sent_info`` are what it asked bitcoinj to pay."""
        return [e for e in self.client_events if e.get("event") in ("ack", "noAck")]

    # -- the chain ----------------------------------------------------------------------------

    @property
    def contract_raw(self) -> bytes:
        return bytes.fromhex(self.broadcasts[0]["tx"])

    @property
    def settlement_raw(self) -> bytes:
        return bytes.fromhex(self.broadcasts[1]["tx"])

    def channel(self) -> ChannelScript:
        key = self.server_key
        client = self.client_event("clientChannelKey")
        return ChannelScript(
            key["version"], bytes.fromhex(client["pubkey"]), bytes.fromhex(key["pubkey"]), key["expire_time"]
        )

    def funded_contract(self) -> "FundedContract":
        """The contract bitcoinj's wallet built, as our wallet would hand it to the client
        machine: its fee is what its recorded inputs (``contractInput``) bring in beyond its
        outputs."""
        raw = self.contract_raw
        tx = tx_mod.parse_transaction(raw)
        inputs = [e for e in self.client_events if e.get("event") == "contractInput"]
        assert len(inputs) == len(tx.vin)
        fee = sum(e["value"] for e in inputs) - sum(o.nValue for o in tx.vout)
        return FundedContract(raw, txid(tx), fee)


def _only(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in events if e.get("event") == name]
    assert len(found) == 1, f"expected one {name} event, found {len(found)}"
    return found[0]


def load(name: str) -> Recording:
    folder = VECTORS / name
    wire = []
    for number, line in enumerate((folder / "wire.jsonl").read_text().splitlines(), 1):
        entry = json.loads(line)
        if "hex" in entry:
            assert entry["conn"] == 1, "every recording is one connection"
            wire.append(WireEntry(number, entry["dir"], bytes.fromhex(entry["hex"]), None))
        else:
            wire.append(WireEntry(number, entry.get("dir"), None, entry["event"]))
    return Recording(
        name,
        wire,
        _events(folder / "server.jsonl"),
        _events(folder / "client1.jsonl"),
        _events(folder / "server_broadcasts.jsonl"),
    )


@dataclass(frozen=True)
class FundedContract:
    """What ``FundContract`` completes with: the signed contract, its txid (internal order)
    and the fee the wallet paid for it."""

    tx: bytes
    txid: bytes
    fee: int


# -- the adapters -----------------------------------------------------------------------------


@dataclass
class _Replay:
    """What both adapters share: the recording, the clock, our messages not yet matched
    against the recording, and the Close effects."""

    rec: Recording
    #: The machine's clock: the recorded server clock unless given (both peers shared a host).
    clock: Optional[int] = None
    outbox: deque = field(default_factory=deque)
    closes: list = field(default_factory=list)
    machine: Any = field(init=False)

    @property
    def now(self) -> int:
        return self.rec.server_now if self.clock is None else self.clock

    def receive(self, payload: bytes) -> None:
        self.carry_out(self.machine.receive(received.decode(m.decode_message(payload)), self.now))

    def carry_out(self, effects: list) -> None:
        """Do each effect in order; a completion's own effects are done before the next."""
        for effect in effects:
            if isinstance(effect, fx.Send):
                self.outbox.append(m.encode_message(effect.message))
            elif isinstance(effect, fx.Close):
                self.closes.append(effect)
            elif not isinstance(effect, fx.ChannelOpened):
                self.carry_out(self.complete(effect))

    def complete(self, effect: Any) -> list:
        """Answer an effect that needs the adapter; return what the machine then asks for."""
        raise NotImplementedError


@dataclass
class ServerReplay(_Replay):
    """Our ServerMachine in the recorded bitcoinj server's place, with an application that
    answers every effect at once: the recorded key, a broadcast and a store that always
    succeed, an application that echoes each payment's info in PAYMENT_ACK (as the recording's
    server did), and a settlement built by ``build_settlement`` paying to the script the
    recorded server paid to."""

    settings: Optional[ServerSettings] = None
    payout_script: Optional[bytes] = None
    broadcasts: list = field(default_factory=list)
    notified: list = field(default_factory=list)
    stored: list = field(default_factory=list)
    settlements: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = self.rec.server_settings()
        self.machine = ServerMachine(self.settings)

    def complete(self, effect: Any) -> list:
        machine = self.machine
        if isinstance(effect, fx.NewServerKey):
            return machine.server_key_ready(self.rec.server_signer)
        if isinstance(effect, fx.BroadcastContract):
            self.broadcasts.append(effect)
            return machine.contract_accepted(self.now)
        if isinstance(effect, fx.StoreServerChannel):
            self.stored.append(effect.record)
            return machine.channel_stored()
        if isinstance(effect, fx.StorePayment):
            self.stored.append(effect)
            return machine.payment_stored()
        if isinstance(effect, fx.NotifyPayment):
            self.notified.append(effect)
            return machine.payment_acknowledged(effect.info) if effect.awaited else []
        if isinstance(effect, fx.SettleChannel):
            return machine.settled(self._settle(effect).raw)
        raise AssertionError(f"unexpected server effect {effect!r}")

    def _settle(self, effect: fx.SettleChannel) -> Settlement:
        record = self.machine.record
        assert record is not None and record.best_signature is not None and self.settings is not None
        assert effect.contract_txid == record.contract_txid and self.payout_script is not None
        channel = ChannelScript(record.version, record.client_key, record.server_key, record.expiry)
        settlement = build_settlement(
            channel, record.contract_txid, record.value, record.value - record.best_value,
            record.best_signature, self.rec.server_signer, self.payout_script, self.settings.effective_fee_rate,
        )
        self.settlements.append(settlement)
        return settlement


@dataclass
class ClientReplay(_Replay):
    """Our ClientMachine in the recorded bitcoinj client's place: the recorded channel key,
    the recorded contract for ``FundContract``, and stores that always succeed."""

    #: The recorded clientChannelKey unless given (c2 never got as far as drawing one).
    signer: Optional[KeySigner] = None
    funding_asked: list = field(default_factory=list)
    stored: list = field(default_factory=list)
    acked: list = field(default_factory=list)
    settlements_seen: list = field(default_factory=list)

    def __post_init__(self) -> None:
        signer = self.signer if self.signer is not None else self.rec.client_signer
        self.machine = ClientMachine(self.rec.client_settings(), self.rec.server_id, signer)

    def complete(self, effect: Any) -> list:
        machine = self.machine
        if isinstance(effect, fx.FundContract):
            self.funding_asked.append(effect)
            return machine.contract_funded(self.rec.funded_contract(), self.now)
        if isinstance(effect, fx.StoreClientChannel):
            self.stored.append(effect.record)
            return machine.channel_stored()
        if isinstance(effect, fx.StoreClientChange):
            self.stored.append(effect)
            return machine.change_stored()
        if isinstance(effect, fx.PaymentAcked):
            self.acked.append(effect)
        elif isinstance(effect, fx.SettlementSeen):
            self.settlements_seen.append(effect)
        else:
            raise AssertionError(f"unexpected client effect {effect!r}")
        return []
