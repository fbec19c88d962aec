"""
The client (payer) side of one channel connection, as a sans-IO state machine.

Same shape as ``channel.server``: feed it decoded messages (``wire.received``), local commands
and effect completions; it returns effects. The steps are bitcoinj's
``PaymentChannelClient.InitStep`` (Appendix B.1) plus the internal waits for our own effects
(funding, storing). :data:`CLIENT_MOVES` has a row for every step: the messages it accepts and
the method that handles each, or that it ignores everything (closed). CLOSE, ERROR, PAYMENT_ACK
(ignored with nothing in flight) and a malformed message are handled in every step that handles
messages; anything else is ``ERROR{SYNTAX_ERROR}``. The client never queues: while its own
effects run (funding, storing) it still answers the server, and the completion that arrives
afterwards finds the step it left (``errors.check_completion``).

Money rules this machine keeps (spec §11.1): the record with the signed refund is stored before
the contract is sent, and each new ``c`` is stored before the payment that signs it is sent.

Pipelining (``ClientSettings.max_in_flight`` > 1, our extension; 1 is bitcoinj's client): up to
that many payments may wait for their PAYMENT_ACK at once. Each is signed on the c of the one
before it and asks for its own ``StoreClientChange``; the completions come in the order asked
(the store keeps order, and one sync covers all the writes of a reactor turn), and each sends
the payment it covers. The acks come in the same order (the server answers in order, §7.3), so
the oldest payment sent is the one an ack is for.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, Mapping, Optional

from twisted_paychan import constants as C
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.chain.interfaces import ISigner
from twisted_paychan.chain.types import FundedTransaction
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel import transactions as ctx
from twisted_paychan.channel import validation as check
from twisted_paychan.channel.record_copy import replace_fields
from twisted_paychan.channel.errors import (
    ChannelUsageError,
    CloseReason,
    ErrorCode,
    RemoteProtocolError,
    check_completion,
)
from twisted_paychan.channel.effects import ClientEffect
from twisted_paychan.channel.settings import ClientSettings
from twisted_paychan.channel.moves import Handler, handles, on
from twisted_paychan.channel.records import ClientChannelRecord
from twisted_paychan.wire import messages as m
from twisted_paychan.wire import received as r


class ClientStep(enum.Enum):
    # Looked up in the transition table on every message: identity hashing (members are
    # singletons, compared by identity) is a C slot, Enum's own __hash__ a Python call.
    __hash__ = object.__hash__

    WAITING_FOR_CONNECTION_OPEN = "waiting for the connection"
    WAITING_FOR_VERSION_NEGOTIATION = "waiting for server version"
    WAITING_FOR_INITIATE = "waiting for initiate"
    FUNDING_CONTRACT = "funding the contract"
    WAITING_FOR_REFUND_RETURN = "waiting for the refund signature"
    STORING_CHANNEL = "storing the new channel"
    WAITING_FOR_CHANNEL_OPEN = "waiting for channel open"
    CHANNEL_OPEN = "channel open"
    WAITING_FOR_CHANNEL_CLOSE = "waiting for the server's close"
    CHANNEL_CLOSED = "closed"


#: Types a server must never send: answered with SYNTAX_ERROR in any step (§8.5).
_CLIENT_TO_SERVER_ONLY: Final = frozenset({r.ClientVersion, r.ProvideRefund, r.ProvideContract, r.UpdatePayment})

#: Steps a completion may find the machine in when the connection is ending while its effect ran
#: (``settle()`` called, or closed).
_ENDING: Final = frozenset({ClientStep.WAITING_FOR_CHANNEL_CLOSE, ClientStep.CHANNEL_CLOSED})


class ClientMachine:
    """One connection's view of one channel, client side. See the module docstring."""

    def __init__(
        self,
        settings: ClientSettings,
        server_id: bytes,
        signer: ISigner,
        resume: Optional[ClientChannelRecord] = None,
    ) -> None:
        if len(server_id) != 32:
            raise ValueError("the server id is 32 bytes")
        if resume is not None and resume.version != settings.versions.requested_major:
            # [Recommended] offer a stored channel only in its own version (§9.1 item 6).
            raise ValueError("a channel can be resumed only in the version it was opened with")
        self.settings = settings
        self.server_id = server_id
        self.signer = signer
        self.resume = resume
        self.step = ClientStep.WAITING_FOR_CONNECTION_OPEN
        self.major: Optional[int] = None
        self.record: Optional[ClientChannelRecord] = None
        #: The amount the server required, when it asked for more than we allow (§12.4 getMissing).
        self.missing = 0
        self._server_key: Optional[bytes] = None
        self._expiry: Optional[int] = None
        self._min_payment = 0
        self._funded: Optional[FundedTransaction] = None
        self._channel: Optional[ChannelScript] = None
        self._unsigned_refund: Optional[bytes] = None
        self._initial: Optional[ctx.SignedPayment] = None
        #: Payments signed whose c is being stored, oldest first, with their info.
        self._unsent: deque[tuple[ctx.SignedPayment, Optional[bytes]]] = deque()
        #: Payments sent and waiting for their PAYMENT_ACK, oldest first.
        self._sent: deque[ctx.SignedPayment] = deque()
        #: The c of the newest payment signed: the next one is signed on it while any is in flight.
        self._signed_change = 0
        #: The payment that leaves no change is signed and has not left.
        self._exhausting_unsent = False
        self._settle_requested = False

    @property
    def is_open(self) -> bool:
        return self.step is ClientStep.CHANNEL_OPEN

    @property
    def payment_in_flight(self) -> bool:
        return bool(self._unsent or self._sent)

    @property
    def payments_in_flight(self) -> int:
        """Payments signed and not yet acknowledged (being stored, or sent)."""
        return len(self._unsent) + len(self._sent)

    @property
    def exhausted(self) -> bool:
        """The payment that leaves no change has gone out (acknowledged or not): the server
        settles at once (§7.3 step 4), and the connection ends with ``CHANNEL_EXHAUSTED``."""
        record = self.record
        if record is None or record.client_change != 0:
            return False
        return not self._exhausting_unsent

    def _paid_by_exhaustion(self) -> list[ClientEffect]:
        """The exhausting payment counts as paid when the connection ends without its
        PAYMENT_ACK (EOF, or the server's CLOSE overtaking it): the server settles on exhaustion
        and stock bitcoinj loses the ack (§7.3 step 4, §1.4). So do the payments sent before it,
        which the settlement's b covers."""
        sent = self._sent
        if not sent or sent[-1].client_change != 0:
            return []
        self._sent = deque()
        return [fx.PaymentAcked(payment.amount, None) for payment in sent]

    def _end_reason(self, otherwise: CloseReason) -> CloseReason:
        if self._settle_requested:
            return CloseReason.CLIENT_REQUESTED_CLOSE
        if self.exhausted:
            return CloseReason.CHANNEL_EXHAUSTED
        return otherwise

    # -- starting -----------------------------------------------------------------------------

    def start(self) -> list[ClientEffect]:
        """The connection is up: ask for a version (and offer the stored channel, if any)."""
        if self.step is not ClientStep.WAITING_FOR_CONNECTION_OPEN:
            raise ChannelUsageError(f"start() in step '{self.step.value}': already started")
        self.step = ClientStep.WAITING_FOR_VERSION_NEGOTIATION
        previous = None if self.resume is None else bytes(reversed(self.resume.contract_txid))
        return [
            fx.Send(
                m.client_version(
                    self.settings.versions.requested_major, self.settings.time_window, previous
                )
            )
        ]

    # -- input from the peer ------------------------------------------------------------------

    def receive(self, message: r.ReceivedMessage, now: int) -> list[ClientEffect]:
        """Handle one decoded message from the server, as its step's row in
        :data:`CLIENT_MOVES` says."""
        row = CLIENT_MOVES[self.step]
        if row is None:
            return []
        handler = row.get(type(message))
        try:
            if handler is None:
                what = "a client-to-server message" if type(message) in _CLIENT_TO_SERVER_ONLY else "out of order"
                raise RemoteProtocolError(
                    ErrorCode.SYNTAX_ERROR, f"{message.NAME} is {what} in step '{self.step.value}'"
                )
            return handler(self, message, now)
        except RemoteProtocolError as e:
            return self._violation(e)

    def _violation(self, e: RemoteProtocolError) -> list[ClientEffect]:
        return [*fx.send_error(e), *self._closed(e.reason, e.explanation)]

    def _closed(self, reason: CloseReason, detail: str = "") -> list[ClientEffect]:
        self.step = ClientStep.CHANNEL_CLOSED
        out: list[ClientEffect] = []
        if self._funded is not None and self.record is None:
            out.append(fx.ReleaseContract(self._funded))  # never sent: give the coins back
            self._funded = None
        return out + [fx.Close(reason, detail)]

    # -- version negotiation (§3.3) -------------------------------------------------------------

    def _on_server_version(self, message: r.ServerVersion, now: int) -> list[ClientEffect]:
        major = message.major
        if not self.settings.versions.accepts(major):
            raise RemoteProtocolError(
                ErrorCode.NO_ACCEPTABLE_VERSION, f"server chose major {major}", CloseReason.NO_ACCEPTABLE_VERSION
            )
        if self.resume is not None and major != self.resume.version:
            raise RemoteProtocolError(
                ErrorCode.NO_ACCEPTABLE_VERSION,
                f"cannot resume a version {self.resume.version} channel as version {major}",
                CloseReason.NO_ACCEPTABLE_VERSION,
            )
        self.major = major
        self.step = ClientStep.WAITING_FOR_INITIATE
        return []

    def _on_resumed(self, message: r.ChannelOpen, now: int) -> list[ClientEffect]:
        """CHANNEL_OPEN right after SERVER_VERSION: the server took our stored channel (§9.1)."""
        if self.resume is None:
            raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, "CHANNEL_OPEN but no resume was asked for")
        self.record = self.resume
        self._channel = ChannelScript(
            self.record.version, self.record.client_key, self.record.server_key, self.record.expiry
        )
        self.step = ClientStep.CHANNEL_OPEN
        return [fx.ChannelOpened(self.record.contract_txid, resumed=True)]

    # -- opening (§5, §6) -----------------------------------------------------------------------

    def _on_initiate(self, i: r.Initiate, now: int) -> list[ClientEffect]:
        s = self.settings
        if i.expire_time_secs >= 2**63 or i.min_accepted_channel_size >= 2**63:
            raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, "expiry or channel size out of range")
        if not s.accepts_expiry(i.expire_time_secs, now):
            raise RemoteProtocolError(
                ErrorCode.TIME_WINDOW_UNACCEPTABLE,
                f"expiry {i.expire_time_secs} is later than we accept",
                CloseReason.TIME_WINDOW_UNACCEPTABLE,
            )
        if i.min_accepted_channel_size > s.channel_value:
            self.missing = i.min_accepted_channel_size - s.channel_value
            raise RemoteProtocolError(
                ErrorCode.CHANNEL_VALUE_TOO_LARGE,
                f"server wants at least {i.min_accepted_channel_size}, we lock {s.channel_value}",
                CloseReason.SERVER_REQUESTED_TOO_MUCH_VALUE,
            )
        # bitcoinj reads a min_payment of 2^63 or more as a negative long: it passes this check
        # and fails below as an initial payment that cannot be made (SYNTAX_ERROR, A.2).
        if s.max_min_payment < i.min_payment < 2**63:
            self.missing = i.min_payment - s.max_min_payment
            raise RemoteProtocolError(
                ErrorCode.MIN_PAYMENT_TOO_LARGE,
                f"server wants a first payment of {i.min_payment}, we allow {s.max_min_payment}",
                CloseReason.SERVER_REQUESTED_TOO_MUCH_VALUE,
                expected_value=s.max_min_payment,
            )
        server_key = check.server_key(i.multisig_key)
        assert self.major is not None
        if not ctx.channel_value_usable(self.major, s.channel_value):
            raise RemoteProtocolError(
                ErrorCode.CHANNEL_VALUE_TOO_LARGE,
                f"a channel of {s.channel_value} sat is too small to refund",
                CloseReason.SERVER_REQUESTED_TOO_MUCH_VALUE,
            )
        if i.expire_time_secs < C.LOCKTIME_THRESHOLD or i.expire_time_secs > C.MAX_TIME:
            raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, f"expiry {i.expire_time_secs} is not a lock-time timestamp")
        # [Recommended] the initial payment's preconditions are checked before anything is
        # funded or stored (bitcoinj stores the channel first and then fails, §5 step 6).
        if i.min_payment > s.channel_value or now > i.expire_time_secs:
            raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, "cannot make the initial payment")
        self._server_key = server_key
        self._expiry = i.expire_time_secs
        self._min_payment = i.min_payment
        self._channel = ChannelScript(self.major, self.signer.public_key, server_key, self._expiry)
        out: list[ClientEffect] = []
        if self.resume is not None:
            out.append(fx.ResumeRefused(self.resume.contract_txid))
            self.resume = None
        self.step = ClientStep.FUNDING_CONTRACT
        return out + [fx.FundContract(self._channel.script_pubkey, s.channel_value)]

    def contract_funded(self, funded: FundedTransaction, now: int) -> list[ClientEffect]:
        """The wallet built and signed the contract (``FundContract`` completed)."""
        still_here = self.step is ClientStep.FUNDING_CONTRACT or check_completion(
            "contract_funded", self.step, ClientStep.FUNDING_CONTRACT, _ENDING
        )
        if not still_here:
            return [fx.ReleaseContract(funded)]  # the connection ended meanwhile: never sent
        self._funded = funded
        assert self._channel is not None and self._expiry is not None
        self._unsigned_refund = ctx.unsigned_refund(self._channel, funded.txid, self.settings.channel_value)
        if self.major == 1:
            self.step = ClientStep.WAITING_FOR_REFUND_RETURN
            return [fx.Send(m.provide_refund(self.signer.public_key, self._unsigned_refund))]
        refund = ctx.sign_v2_refund(self._unsigned_refund, self._channel, self.signer)
        return self._store_channel(refund, funded, now)

    def funding_failed(self, why: str) -> list[ClientEffect]:
        """The wallet could not fund the contract (``FundContract`` failed). [Recommended] tell
        the server (bitcoinj leaves the connection hanging, §13 item 17)."""
        still_here = self.step is ClientStep.FUNDING_CONTRACT or check_completion(
            "funding_failed", self.step, ClientStep.FUNDING_CONTRACT, _ENDING
        )
        if not still_here:
            return []
        return self._violation(
            RemoteProtocolError(ErrorCode.CHANNEL_VALUE_TOO_LARGE, f"cannot fund the channel: {why}",
                                CloseReason.SERVER_REQUESTED_TOO_MUCH_VALUE)
        )

    def _on_return_refund(self, message: r.ReturnRefund, now: int) -> list[ClientEffect]:
        assert self._channel is not None and self._unsigned_refund is not None and self._funded is not None
        refund = check.v1_refund_signature(message.signature, self._unsigned_refund, self._channel, self.signer)
        return self._store_channel(refund, self._funded, now)

    def _store_channel(self, refund: bytes, funded: FundedTransaction, now: int) -> list[ClientEffect]:
        """Sign the initial payment and store everything before the contract leaves (§11.1)."""
        assert self._channel is not None and self._expiry is not None and self._server_key is not None
        value = self.settings.channel_value
        initial = ctx.sign_payment(self._channel, funded.txid, value, self._min_payment, self.signer)
        self._initial = initial
        self.record = ClientChannelRecord(
            contract_txid=funded.txid,
            server_id=self.server_id,
            version=self.major or 2,
            contract=funded.tx,
            refund=refund,
            client_key=self.signer.public_key,
            server_key=self._server_key,
            value=value,
            client_change=initial.client_change,
            expiry=self._expiry,
            refund_fees=funded.fee + C.REFUND_FEE,
            created_at=now,
            updated_at=now,
        )
        self.step = ClientStep.STORING_CHANNEL
        return [fx.StoreClientChannel(self.record)]

    def channel_stored(self) -> list[ClientEffect]:
        """The record (refund included) is durable (``StoreClientChannel`` completed): now the
        contract may leave."""
        still_here = self.step is ClientStep.STORING_CHANNEL or check_completion(
            "channel_stored", self.step, ClientStep.STORING_CHANNEL, _ENDING
        )
        assert self.record is not None and self._initial is not None
        self._funded = None
        if not still_here:
            return []
        self.step = ClientStep.WAITING_FOR_CHANNEL_OPEN
        client_key = self.record.client_key if self.major == 2 else None
        return [
            fx.Send(
                m.provide_contract(
                    self.record.contract,
                    m.payment(self._initial.client_change, self._initial.signature),
                    client_key,
                )
            )
        ]

    def _on_channel_open(self, message: r.ChannelOpen, now: int) -> list[ClientEffect]:
        assert self.record is not None
        self.step = ClientStep.CHANNEL_OPEN
        return [fx.ChannelOpened(self.record.contract_txid, resumed=False)]

    # -- paying (§7.2, §7.4) ------------------------------------------------------------------

    def pay(self, amount: int, info: Optional[bytes], now: int) -> list[ClientEffect]:
        """Sign a payment of ``amount`` more; raises :class:`ChannelUsageError` if it cannot be
        made. The new ``c`` is stored before the payment is sent (``change_stored``)."""
        if self.step is not ClientStep.CHANNEL_OPEN:
            raise ChannelUsageError(f"the channel is not open (step '{self.step.value}')")
        if self._settle_requested:
            raise ChannelUsageError("the channel is being settled")
        if len(self._unsent) + len(self._sent) >= self.settings.max_in_flight:
            if self.settings.max_in_flight == 1:
                raise ChannelUsageError("a payment is already waiting for its acknowledgement")
            raise ChannelUsageError(f"{self.settings.max_in_flight} payments are already waiting for their acknowledgements")
        if amount < 0:
            raise ChannelUsageError("a payment cannot be negative")
        record = self.record
        assert record is not None and self._channel is not None
        if now > record.expiry:
            raise ChannelUsageError("the channel has expired")
        change = self._signed_change if self._unsent or self._sent else record.client_change
        if amount > change:
            raise ChannelUsageError(f"only {change} sat left in the channel")
        payment = ctx.sign_payment(self._channel, record.contract_txid, change, amount, self.signer)
        self._unsent.append((payment, info))
        self._signed_change = payment.client_change
        if payment.client_change == 0:
            self._exhausting_unsent = True
        return [fx.StoreClientChange(record.contract_txid, payment.client_change)]

    def change_stored(self) -> list[ClientEffect]:
        """The oldest unsent payment's ``c`` is durable (``StoreClientChange`` completed): send
        that payment."""
        still_here = self.step is ClientStep.CHANNEL_OPEN or check_completion(
            "change_stored", self.step, ClientStep.CHANNEL_OPEN, _ENDING
        )
        payment, info = self._unsent.popleft()
        record = self.record
        assert record is not None
        self.record = replace_fields(record, client_change=payment.client_change)  # dataclasses.replace, faster
        if not still_here:
            return []
        if payment.client_change == 0:
            self._exhausting_unsent = False
        self._sent.append(payment)
        out: list[ClientEffect] = [fx.Send(m.update_payment(payment.client_change, payment.signature, info))]
        if self._settle_requested and not self._unsent:
            self.step = ClientStep.WAITING_FOR_CHANNEL_CLOSE  # the CLOSE settle() held back
            out.append(fx.Send(m.close()))
        return out

    def _on_payment_ack(self, message: r.PaymentAck, now: int) -> list[ClientEffect]:
        if not self._sent:
            return []  # nothing in flight: ignored (§7.4)
        payment = self._sent.popleft()
        return [fx.PaymentAcked(payment.amount, message.info)]

    # -- closing (§8) -------------------------------------------------------------------------

    def settle(self) -> list[ClientEffect]:
        """Ask the server to settle: CLOSE, then wait for its CLOSE (or EOF)."""
        if self.step in (ClientStep.CHANNEL_CLOSED, ClientStep.WAITING_FOR_CHANNEL_CLOSE):
            return []
        if self.step is ClientStep.WAITING_FOR_CONNECTION_OPEN:
            raise ChannelUsageError("not connected")
        self._settle_requested = True
        if self._unsent and self.step is ClientStep.CHANNEL_OPEN:
            return []  # the CLOSE follows the payments whose c is being stored (change_stored)
        self.step = ClientStep.WAITING_FOR_CHANNEL_CLOSE
        return [fx.Send(m.close())]

    def disconnect(self) -> list[ClientEffect]:
        """Close without settling; the stored channel stays resumable (§8.4)."""
        if self.step is ClientStep.CHANNEL_CLOSED:
            return []
        return self._closed(CloseReason.CONNECTION_CLOSED, "disconnected by us")

    def _on_close(self, message: r.Close, now: int) -> list[ClientEffect]:
        out: list[ClientEffect] = self._paid_by_exhaustion()
        tx = message.settlement_tx
        if tx is not None:
            check.settlement_parses(tx)  # §8.3 step 1: BAD_TRANSACTION if it does not
            if self.record is not None and self._channel is not None:
                if check.settlement_spends_contract(tx, self.record.contract_txid, self._channel, self.record.value):
                    out.append(fx.SettlementSeen(self.record.contract_txid, bytes(tx)))
                # An invalid settlement is ignored (§8.3), as bitcoinj does.
        return out + self._closed(self._end_reason(CloseReason.SERVER_REQUESTED_CLOSE))

    def _on_error(self, e: r.Error, now: int) -> list[ClientEffect]:
        return self._closed(CloseReason.REMOTE_SENT_ERROR, f"{ErrorCode(e.code).name}: {e.explanation}")

    def _on_malformed(self, message: r.Malformed, now: int) -> list[ClientEffect]:
        raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, message.explanation)

    def connection_lost(self) -> list[ClientEffect]:
        """EOF. With stock bitcoinj this is how a settlement or an exhausting payment ends
        (§1.4): the exhausting payment counts as paid, and the adapter looks for the settlement
        on the chain."""
        if self.step is ClientStep.CHANNEL_CLOSED:
            return []
        paid = self._paid_by_exhaustion()
        reason = self._end_reason(CloseReason.CONNECTION_CLOSED)
        detail = {
            CloseReason.CLIENT_REQUESTED_CLOSE: "EOF after our CLOSE",
            CloseReason.CHANNEL_EXHAUSTED: "EOF after the exhausting payment: the server settles",
        }.get(reason, "")
        return paid + self._closed(reason, detail)


# -- the transition table ---------------------------------------------------------------------

# Entries are built with ``moves.on``, which checks each handler against its message class.
_Handler = Handler[ClientMachine, ClientEffect]


def _handles(*moves: tuple[type, _Handler]) -> Mapping[type, _Handler]:
    return handles(_EVERY_STEP, *moves)


#: Handled in every step that handles messages at all (§7.4, §8.3, §8.5, §1.3).
_EVERY_STEP: Final = (
    on(r.Close, ClientMachine._on_close),
    on(r.Error, ClientMachine._on_error),
    on(r.PaymentAck, ClientMachine._on_payment_ack),
    on(r.Malformed, ClientMachine._on_malformed),
)

#: Every step of the client's connection, and the messages from the server it handles (anything
#: else is ``ERROR{SYNTAX_ERROR}``); None: everything is ignored. B.1 of the specification, plus
#: our own waits, in which only the every-step messages are legal.
CLIENT_MOVES: Final[Mapping[ClientStep, Optional[Mapping[type, _Handler]]]] = {
    ClientStep.WAITING_FOR_CONNECTION_OPEN: _handles(),
    ClientStep.WAITING_FOR_VERSION_NEGOTIATION: _handles(on(r.ServerVersion, ClientMachine._on_server_version)),
    # CHANNEL_OPEN here answers our resume (§9.1); the handler refuses it if we asked for none.
    ClientStep.WAITING_FOR_INITIATE: _handles(
        on(r.Initiate, ClientMachine._on_initiate), on(r.ChannelOpen, ClientMachine._on_resumed)
    ),
    ClientStep.FUNDING_CONTRACT: _handles(),  # FundContract outstanding
    ClientStep.WAITING_FOR_REFUND_RETURN: _handles(on(r.ReturnRefund, ClientMachine._on_return_refund)),
    ClientStep.STORING_CHANNEL: _handles(),  # StoreClientChannel outstanding
    ClientStep.WAITING_FOR_CHANNEL_OPEN: _handles(on(r.ChannelOpen, ClientMachine._on_channel_open)),
    # PAYMENT_ACK (every step) is what this step waits for; payments go out through pay().
    ClientStep.CHANNEL_OPEN: _handles(),
    ClientStep.WAITING_FOR_CHANNEL_CLOSE: _handles(),  # CLOSE (every step) is what it waits for
    ClientStep.CHANNEL_CLOSED: None,
}
