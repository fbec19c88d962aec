"""
The server (payee) side of one channel connection, as a sans-IO state machine.

Feed it what happens (``receive(message, now)`` with a decoded ``wire.received`` message, the
completions of the effects it asked for, ``connection_lost()``, ``close()``) and it returns the
effects to carry out, in order (``channel.effects``). Every legal move is in :data:`SERVER_MOVES`,
one row per :class:`ServerStep`: the messages the step accepts and the method that handles each,
or whether the step queues or ignores what arrives. CLOSE, ERROR and a malformed message are
handled in every step that handles messages; anything else out of place is answered with
``ERROR{SYNTAX_ERROR}`` (the spec's recommendation where bitcoinj silently drops).

Messages that arrive while an effect is outstanding (a store, a key, the application's ack)
wait in a short queue and are handled once it completes, so the order of the wire is the order
of processing. The queue is bounded: a well-behaved client has one payment in flight. Each
completion method checks that it answers the step's outstanding effect
(``errors.check_completion``).

Pipelined payments (a client with ``max_in_flight`` > 1, or any bitcoinj-compatible client that
does not wait for its acks): an UPDATE_PAYMENT that arrives while an earlier payment of this
connection is being stored or acknowledged is checked at once against the newest b asked for and
stored at once (``StorePayment``), so every payment of one read shares the store's one sync
(group commit). It then waits in the queue like any message and is acknowledged in its turn,
one PAYMENT_ACK each, in order. Only a clean run of payments is taken ahead: one that fails its
check, or any other message, queues as it came and everything after it waits behind it.

Where bitcoinj and the specification's **[Recommended]** behaviour differ, this follows the
recommendation (stays wire-compatible); each such place says so.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, Literal, Mapping, NoReturn, Optional, Union

from twisted_paychan import constants as C
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.chain.interfaces import ISigner
from twisted_paychan.channel import effects as fx
from twisted_paychan.channel import validation as check
from twisted_paychan.channel.effects import ServerEffect
from twisted_paychan.channel.record_copy import replace_fields
from twisted_paychan.channel.errors import CloseReason, ErrorCode, RemoteProtocolError, check_completion
from twisted_paychan.channel.settings import ServerSettings
from twisted_paychan.channel.moves import Handler, handles, on
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.wire import messages as m
from twisted_paychan.wire import received as r

#: Messages a client may have queued behind an outstanding effect before we call it abuse
#: (payments stored ahead count against ``C.MAX_PAYMENTS_IN_FLIGHT`` instead).
MAX_QUEUED_MESSAGES = 16

#: How the ERROR{OTHER} explanation begins when the server's own node could not be asked about
#: the contract: the client reads the server's outage, not a fault of its transaction.
SERVER_NODE_UNAVAILABLE: Final = "the server's node is unavailable"
#: The start of the ERROR{OTHER} explanation when the wallet cannot lend a channel key (a remote
#: signer that does not answer): the server's failure, not the client's.
SERVER_KEY_UNAVAILABLE: Final = "the server cannot make a channel key now"


class _Ahead:
    """A pipelined payment checked and sent to the store before its turn: its place in the
    queue, and what the store said (None while it is storing, True stored, or why it refused)."""

    __slots__ = ("payment", "outcome")

    def __init__(self, payment: "check.CheckedPayment") -> None:
        self.payment = payment
        self.outcome: Union[None, Literal[True], str] = None


class ServerStep(enum.Enum):
    # Looked up in the transition table on every message: identity hashing (members are
    # singletons, compared by identity) is a C slot, Enum's own __hash__ a Python call.
    __hash__ = object.__hash__

    WAITING_ON_CLIENT_VERSION = "waiting on client version"
    LOOKING_UP_RESUME = "looking up a channel to resume"
    WAITING_ON_SERVER_KEY = "waiting on a channel key"
    WAITING_ON_UNSIGNED_REFUND = "waiting on unsigned refund"
    WAITING_ON_CONTRACT = "waiting on contract"
    WAITING_ON_MULTISIG_ACCEPTANCE = "waiting on contract broadcast"
    STORING_CHANNEL = "storing the new channel"
    CHANNEL_OPEN = "channel open"
    STORING_PAYMENT = "storing a payment"
    WAITING_ON_APPLICATION = "waiting on the application's ack"
    SETTLING = "settling"
    CLOSED = "closed"


class Inbox(enum.Enum):
    """What a step does with a message from the peer, when it does not handle it."""

    #: An effect is outstanding: the message waits in the queue until it completes.
    QUEUE = "queue"
    #: The connection is settling or closed: the message is dropped (§8.2 step 1).
    IGNORE = "ignore"


#: Types a client must never send: bitcoinj answers them with SYNTAX_ERROR in any step.
_SERVER_TO_CLIENT_ONLY: Final = frozenset({r.ServerVersion, r.Initiate, r.ReturnRefund, r.ChannelOpen, r.PaymentAck})

#: Steps a completion may find the machine in when the connection ended while its effect ran.
_ENDING: Final = frozenset({ServerStep.CLOSED})
#: Steps in which a payment is being stored or accepted: a local close waits for its ack.
_PAYMENT_IN_FLIGHT: Final = frozenset({ServerStep.STORING_PAYMENT, ServerStep.WAITING_ON_APPLICATION})


class ServerMachine:
    """One connection's view of one channel, server side. See the module docstring."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.step = ServerStep.WAITING_ON_CLIENT_VERSION
        self.major: Optional[int] = None
        self.expiry: Optional[int] = None
        self.signer: Optional[ISigner] = None
        self.client_key: Optional[bytes] = None
        self.refund_output: Optional[bytes] = None
        self.refund_outpoint: Optional[tuple[bytes, int]] = None
        self.record: Optional[ServerChannelRecord] = None
        #: Set when the connection is gone; effects already running still complete.
        self.disconnected = False
        self._queue: deque[tuple[Union[r.ReceivedMessage, _Ahead], int]] = deque()
        #: Payments in the queue stored ahead of their turn; the queue holds nothing else.
        self._ahead = 0
        #: Every StorePayment outstanding, oldest first (the store completes them in order):
        #: the current payment's as None, a pipelined one's as its queue entry.
        self._stores: deque[Optional[_Ahead]] = deque()
        #: The b of the newest payment sent to the store: a pipelined payment is checked on it.
        self._newest_best = 0
        #: A payment of this connection was stored: later ones may be stored ahead (a first
        #: one may be a resume's proof of the client key, which the manager handles alone).
        self._pipelining = False
        self._pending_contract: Optional[check.CheckedContract] = None
        self._pending_payment: Optional[check.CheckedPayment] = None
        self._settle_reason = CloseReason.CLIENT_REQUESTED_CLOSE
        self._exhausted = False
        #: A local close asked for while a payment was in flight: sent right after its ack.
        self._close_after_payment = False
        #: An exhausting initial payment: CHANNEL_OPEN waits for the settlement's outcome.
        self._open_after_settle = False
        self._script: Optional[tuple[bytes, ChannelScript]] = None

    # -- input from the peer --------------------------------------------------------------------

    def receive(self, message: r.ReceivedMessage, now: int) -> list[ServerEffect]:
        """Handle one decoded message from the client, as its step's row in
        :data:`SERVER_MOVES` says."""
        row = SERVER_MOVES[self.step]
        if row is Inbox.IGNORE:
            return []
        if row is Inbox.QUEUE:
            if type(message) is r.UpdatePayment and self._ahead == len(self._queue) and self._pipelining:
                stored_ahead = self._store_ahead(message, now)
                if stored_ahead is not None:
                    return stored_ahead
            limit = C.MAX_PAYMENTS_IN_FLIGHT if type(message) is r.UpdatePayment else MAX_QUEUED_MESSAGES
            if len(self._queue) - self._ahead >= limit:
                return self._violation(
                    RemoteProtocolError(ErrorCode.SYNTAX_ERROR, "too many messages without waiting for replies")
                )
            self._queue.append((message, now))
            return []
        try:
            handler = row.get(type(message))
            if handler is None:
                self._refuse(message)
            return handler(self, message, now)
        except RemoteProtocolError as e:
            return self._violation(e)

    def _refuse(self, message: r.ReceivedMessage) -> NoReturn:
        """A message its step's row does not list."""
        what = "a server-to-client message" if type(message) in _SERVER_TO_CLIENT_ONLY else "out of order"
        raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, f"{message.NAME} is {what} in step '{self.step.value}'")

    def _store_ahead(self, update: r.UpdatePayment, now: int) -> Optional[list[ServerEffect]]:
        """Check a pipelined payment and store it now (see the module docstring); None leaves
        it to queue as it came (it fails its check, or the connection is ending)."""
        if self.step not in _PAYMENT_IN_FLIGHT or self._close_after_payment or self.disconnected:
            return None
        if self._ahead >= C.MAX_PAYMENTS_IN_FLIGHT:
            return self._violation(
                RemoteProtocolError(ErrorCode.SYNTAX_ERROR, "too many payments without waiting for their acks")
            )
        record = self.record
        assert record is not None
        try:
            payment = check.payment_update(
                update, record.value, self._newest_best, record.contract_txid, self._channel_script()
            )
        except RemoteProtocolError:
            return None  # refused in its turn, after the acks of the payments before it
        ahead = _Ahead(payment)
        self._queue.append((ahead, now))
        self._ahead += 1
        self._stores.append(ahead)
        self._newest_best = payment.best_value
        return [fx.StorePayment(record.contract_txid, payment.best_value, payment.signature)]

    def _promote(self) -> list[ServerEffect]:
        """The connection's first payment is stored: the payments queued behind it are stored
        now, as if they had arrived after it (up to the first that is not a clean payment)."""
        queued, self._queue = self._queue, deque()
        out: list[ServerEffect] = []
        while queued:
            message, now = queued[0]
            if type(message) is not r.UpdatePayment:
                break
            stored = self._store_ahead(message, now)
            if stored is None or self.step is ServerStep.CLOSED:
                break
            queued.popleft()
            out.extend(stored)
        if self.step is not ServerStep.CLOSED:
            self._queue.extend(queued)
        return out

    def _take_ahead(self, ahead: _Ahead) -> list[ServerEffect]:
        """A payment stored ahead reaches its turn: on as if it had just been handled."""
        self._ahead -= 1
        self._pending_payment = ahead.payment
        self.step = ServerStep.STORING_PAYMENT
        if ahead.outcome is None:
            # Every store before it has completed (they complete in order): its completion is
            # the next, and it now answers the current payment.
            assert self._stores[0] is ahead
            self._stores[0] = None
            return []
        if ahead.outcome is True:
            return self._stored()
        return self._refused(ahead.outcome)

    def _drain(self, out: list[ServerEffect]) -> list[ServerEffect]:
        """Handle messages that queued while we were busy, until we are busy again."""
        while self._queue:
            row = SERVER_MOVES[self.step]
            if isinstance(row, Inbox):
                break
            message, now = self._queue.popleft()
            if type(message) is _Ahead:
                out.extend(self._take_ahead(message))
                continue
            assert not isinstance(message, _Ahead)
            try:
                handler = row.get(type(message))
                if handler is None:
                    self._refuse(message)
                out.extend(handler(self, message, now))
            except RemoteProtocolError as e:
                out.extend(self._violation(e))
        return out

    def _violation(self, e: RemoteProtocolError) -> list[ServerEffect]:
        return [*fx.send_error(e), *self._closed(e.reason, e.explanation)]

    def _closed(self, reason: CloseReason, detail: str = "") -> list[ServerEffect]:
        self.step = ServerStep.CLOSED
        self._queue.clear()
        self._ahead = 0
        return [fx.Close(reason, detail)]


    # -- version negotiation and resume (§3.2, §9.2) -------------------------------------------

    def _on_client_version(self, cv: r.ClientVersion, now: int) -> list[ServerEffect]:
        # Unlike bitcoinj, which refuses any major it does not speak (§3.2 step 2), offer the
        # highest one we speak up to the client's: the protocol lets a server answer lower, and
        # a client that cannot go on in it answers NO_ACCEPTABLE_VERSION itself (§3.3 step 3).
        # A stock VERSION_2_ALLOW_1 client thus reaches a v1-only server.
        spoken = [major for major in self.settings.versions if major <= cv.major]
        if not spoken:
            raise RemoteProtocolError(
                ErrorCode.NO_ACCEPTABLE_VERSION,
                f"server speaks majors {sorted(self.settings.versions)}, client asked for {cv.major}",
                CloseReason.NO_ACCEPTABLE_VERSION,
            )
        self.major = max(spoken)
        self.expiry = now + self.settings.clamp_time_window(cv.time_window_secs)
        out: list[ServerEffect] = [fx.Send(m.server_version(self.major))]
        resume_hash = cv.previous_channel_contract_hash
        if resume_hash is not None and len(resume_hash) == 32:  # any other length is ignored (§9.2 step 1)
            self.step = ServerStep.LOOKING_UP_RESUME
            return out + [fx.FindChannel(bytes(reversed(resume_hash)))]
        return out + self._new_channel_key()

    def _new_channel_key(self) -> list[ServerEffect]:
        self.step = ServerStep.WAITING_ON_SERVER_KEY
        return [fx.NewServerKey()]

    def resume_found(self, record: ServerChannelRecord) -> list[ServerEffect]:
        """The stored channel to resume (``FindChannel`` completed)."""
        still_here = self.step is ServerStep.LOOKING_UP_RESUME or check_completion(
            "resume_found", self.step, ServerStep.LOOKING_UP_RESUME, _ENDING
        )
        if not still_here:
            return []
        if record.state is not ServerChannelState.OPEN or record.version != self.major:
            # [Recommended] only resume a channel we can still pay on, in its own version (the
            # negotiated major, which may be lower than the client's); bitcoinj rebuilds it in
            # the stored version whatever was negotiated (§9.2, §13 item 27).
            return self._new_channel_key()
        self.record = record
        self.expiry = record.expiry
        self.step = ServerStep.CHANNEL_OPEN
        out: list[ServerEffect] = [fx.Send(m.channel_open()), fx.ChannelOpened(record.contract_txid, resumed=True)]
        return self._drain(out)

    def resume_not_found(self) -> list[ServerEffect]:
        """No stored channel to resume (``FindChannel`` completed): open a new one."""
        still_here = self.step is ServerStep.LOOKING_UP_RESUME or check_completion(
            "resume_not_found", self.step, ServerStep.LOOKING_UP_RESUME, _ENDING
        )
        if not still_here:
            return []
        return self._new_channel_key()

    def server_key_ready(self, signer: ISigner) -> list[ServerEffect]:
        """A fresh channel key from the wallet (``NewServerKey`` completed)."""
        still_here = self.step is ServerStep.WAITING_ON_SERVER_KEY or check_completion(
            "server_key_ready", self.step, ServerStep.WAITING_ON_SERVER_KEY, _ENDING
        )
        if not still_here:
            return []
        assert self.expiry is not None
        self.signer = signer
        self.step = (
            ServerStep.WAITING_ON_UNSIGNED_REFUND if self.major == 1 else ServerStep.WAITING_ON_CONTRACT
        )
        out: list[ServerEffect] = [
            fx.Send(
                m.initiate(
                    signer.public_key,
                    self.settings.min_channel_size,
                    self.expiry,
                    self.settings.min_payment,
                )
            )
        ]
        return self._drain(out)

    def server_key_unavailable(self, why: str) -> list[ServerEffect]:
        """The wallet could not lend a key (``NewServerKey`` failed: a remote signer that does
        not answer). [Recommended] ``ERROR{OTHER}`` saying so, closed as the server's failure."""
        still_here = self.step is ServerStep.WAITING_ON_SERVER_KEY or check_completion(
            "server_key_unavailable", self.step, ServerStep.WAITING_ON_SERVER_KEY, _ENDING
        )
        if not still_here:
            return []
        return self._violation(RemoteProtocolError(ErrorCode.OTHER, f"{SERVER_KEY_UNAVAILABLE}: {why}",
                                                   CloseReason.SERVER_REQUESTED_CLOSE))

    # -- opening (§5 steps 5 and 7, §6 step 5) -------------------------------------------------

    def _on_provide_refund(self, pr: r.ProvideRefund, now: int) -> list[ServerEffect]:
        assert self.expiry is not None and self.signer is not None
        refund = check.v1_refund(pr.tx, self.expiry)
        self.client_key = check.client_key(pr.multisig_key)
        self.refund_output = refund.output
        self.refund_outpoint = refund.outpoint
        signature = check.sign_v1_refund(pr.tx, self.client_key, self.signer)
        self.step = ServerStep.WAITING_ON_CONTRACT
        return [fx.Send(m.return_refund(signature))]

    def _on_provide_contract(self, pc: r.ProvideContract, now: int) -> list[ServerEffect]:
        assert self.expiry is not None and self.major is not None and self.signer is not None
        if self.major == 2:
            if pc.client_key is None:
                raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, "a version 2 contract needs client_key")
            self.client_key = check.client_key(pc.client_key)
        assert self.client_key is not None
        channel = ChannelScript(self.major, self.client_key, self.signer.public_key, self.expiry)
        contract = check.contract(pc.tx, channel, self.settings.min_channel_size)
        if self.major == 1 and self.refund_outpoint != (contract.txid, 0):
            # [Recommended] bitcoinj never checks that the refund it signed spends this contract.
            raise RemoteProtocolError(ErrorCode.BAD_TRANSACTION, "the refund we signed does not spend this contract")
        # [Recommended] the initial payment is checked before the contract goes on chain, and
        # must pay at least min(P, V) (§5 step 7.10; bitcoinj checks neither).
        payment = check.payment_update(pc.initial_payment, contract.value, 0, contract.txid, channel)
        if payment.best_value < min(self.settings.min_payment, contract.value):
            raise RemoteProtocolError(
                ErrorCode.BAD_TRANSACTION,
                f"initial payment {payment.best_value} is below the minimum {self.settings.min_payment}",
            )
        self._pending_contract = contract
        self._pending_payment = payment
        # Stored before the contract goes out ([Recommended], §13 item 7, and further): a crash
        # after the broadcast can then never leave a contract on chain that we hold no record of.
        self.record = self._new_record(contract, payment, now)
        self.step = ServerStep.STORING_CHANNEL
        return [fx.StoreServerChannel(self.record)]

    def _new_record(self, contract: "check.CheckedContract", payment: "check.CheckedPayment",
                    now: int) -> ServerChannelRecord:
        assert self.client_key is not None and self.expiry is not None and self.major is not None
        assert self.signer is not None
        return ServerChannelRecord(
            contract_txid=contract.txid,
            version=self.major,
            contract=contract.tx,
            value=contract.value,
            expiry=self.expiry,
            server_key=self.signer.public_key,
            client_key=self.client_key,
            best_value=payment.best_value,
            best_signature=payment.signature,
            client_output=self.refund_output,
            created_at=now,
            updated_at=now,
        )

    def channel_stored(self) -> list[ServerEffect]:
        """The new record is durable (``StoreServerChannel`` completed): now the contract may be
        broadcast, whatever happened to the connection meanwhile (the client signed it and holds
        its refund; the stored channel is settled or resumed later)."""
        still_here = self.step is ServerStep.STORING_CHANNEL or check_completion(
            "channel_stored", self.step, ServerStep.STORING_CHANNEL, _ENDING
        )
        contract = self._pending_contract
        assert contract is not None
        out: list[ServerEffect] = [fx.BroadcastContract(contract.tx, contract.txid)]
        if still_here:
            self.step = ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE
            return self._drain(out)  # a CLOSE that came meanwhile is answered now
        return out

    def contract_rejected(self, why: str, unreachable: bool = False) -> list[ServerEffect]:
        """The chain refused the contract. [Recommended] ``ERROR{OTHER}`` (bitcoinj sends
        nothing and lets the client time out). ``unreachable``: no node was asked (the server's
        node is down or refuses our credentials): the server's failure, said so, and closed as
        the server's (SERVER_REQUESTED_CLOSE), never blamed on the client's message."""
        still_here = self.step is ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE or check_completion(
            "contract_rejected", self.step, ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE, _ENDING
        )
        self._pending_payment = None
        if not still_here:
            return []
        if unreachable:
            return self._violation(RemoteProtocolError(
                ErrorCode.OTHER, f"{SERVER_NODE_UNAVAILABLE}: {why}; the server keeps the channel and broadcasts "
                "the contract when its node answers", CloseReason.SERVER_REQUESTED_CLOSE))
        return self._violation(RemoteProtocolError(ErrorCode.OTHER, f"contract rejected by the network: {why}"))

    def contract_accepted(self, now: int) -> list[ServerEffect]:
        """The chain took the contract (``BroadcastContract`` completed): the channel opens."""
        still_here = self.step is ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE or check_completion(
            "contract_accepted", self.step, ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE, _ENDING
        )
        assert self.record is not None and self._pending_payment is not None
        payment, self._pending_payment = self._pending_payment, None
        # The application hears of the channel before any payment on it, whatever happens on
        # the wire (bitcoinj calls paymentIncrease for the initial payment before channelOpen,
        # §5 step 7.10): the channel is stored and its contract accepted, so it is open, even if
        # the client went away meanwhile or its CHANNEL_OPEN waits for a settlement (below).
        heard: list[ServerEffect] = [fx.ChannelOpened(self.record.contract_txid, resumed=False)]
        if payment.best_value > 0:
            heard.append(
                fx.NotifyPayment(self.record.contract_txid, payment.best_value, payment.best_value,
                                 payment.info, awaited=False)
            )
        if not still_here or self.disconnected:
            # The connection went away, or the client closed, while the contract was on its
            # way: the channel is stored and can be resumed.
            self.step = ServerStep.CLOSED
            return heard
        self.step = ServerStep.CHANNEL_OPEN
        if payment.client_change == 0:
            # The initial payment exhausted the channel (§5 step 7.10): settle at once. Like
            # bitcoinj, CHANNEL_OPEN still goes out before CLOSE{settlement} (or before a quiet
            # close when the broadcast fails), but not when b cannot pay the settlement fee:
            # that is ERROR{BAD_TRANSACTION} and no CHANNEL_OPEN. So it waits for the outcome.
            self._open_after_settle = True
            return heard + self._settle(CloseReason.CHANNEL_EXHAUSTED)
        return self._drain([fx.Send(m.channel_open()), *heard])

    # -- payments (§7.3) ----------------------------------------------------------------------

    def _on_update_payment(self, update: r.UpdatePayment, now: int) -> list[ServerEffect]:
        record = self.record
        assert record is not None
        payment = check.payment_update(
            update, record.value, record.best_value, record.contract_txid, self._channel_script()
        )
        self._pending_payment = payment
        self.step = ServerStep.STORING_PAYMENT
        self._stores.append(None)
        self._newest_best = payment.best_value
        return [fx.StorePayment(record.contract_txid, payment.best_value, payment.signature)]

    def _completed_ahead(self, outcome: Union[Literal[True], str]) -> bool:
        """A store completed: True if it was a pipelined payment's (noted for its turn)."""
        ahead = self._stores.popleft() if self._stores else None
        if ahead is None:
            return False
        ahead.outcome = outcome
        return True

    def payment_stored(self) -> list[ServerEffect]:
        """The payment is durable (``StorePayment`` completed): now the application, then the ack."""
        if self._completed_ahead(True):
            return []
        return self._stored()

    def _stored(self) -> list[ServerEffect]:
        still_here = self.step is ServerStep.STORING_PAYMENT or check_completion(
            "payment_stored", self.step, ServerStep.STORING_PAYMENT, _ENDING
        )
        record, payment = self.record, self._pending_payment
        assert record is not None and payment is not None
        increase = payment.best_value - record.best_value
        self.record = record = _with_payment(record, payment)
        if self.disconnected or not still_here:
            # Stored, so it counts (it is in the settlement): the application hears of it like
            # of any payment, but there is nobody left to acknowledge it to.
            self._pending_payment = None
            self.step = ServerStep.CLOSED
            if increase > 0:
                return [fx.NotifyPayment(record.contract_txid, increase, payment.best_value, payment.info,
                                         awaited=False)]
            return []
        self._exhausted = payment.client_change == 0
        self.step = ServerStep.WAITING_ON_APPLICATION
        ahead: list[ServerEffect] = []
        if not self._pipelining:
            self._pipelining = True
            if self._queue:
                ahead = self._promote()
                if self.step is ServerStep.CLOSED:
                    return ahead
        if increase > 0:
            notify = fx.NotifyPayment(record.contract_txid, increase, payment.best_value, payment.info, awaited=True)
            return [*ahead, notify] if ahead else [notify]
        return ahead + self.payment_acknowledged(None)  # nothing new for the application to accept

    def payment_refused(self, why: str) -> list[ServerEffect]:
        """The store refused the payment: the channel no longer takes payments (its contract
        was double-spent or never confirmed, or it is being settled). §7.3 check 5:
        ``BAD_TRANSACTION``; the server's value does not grow and nothing is acknowledged."""
        if self._completed_ahead(why):
            return []
        return self._refused(why)

    def _refused(self, why: str) -> list[ServerEffect]:
        still_here = self.step is ServerStep.STORING_PAYMENT or check_completion(
            "payment_refused", self.step, ServerStep.STORING_PAYMENT, _ENDING
        )
        self._pending_payment = None
        if self.disconnected or not still_here:
            self.step = ServerStep.CLOSED
            return []
        return self._violation(RemoteProtocolError(ErrorCode.BAD_TRANSACTION, f"channel closed to payments: {why}"))

    def payment_acknowledged(self, info: Optional[bytes]) -> list[ServerEffect]:
        """The application accepted the payment, with optional ack info (``NotifyPayment``
        completed)."""
        still_here = self.step is ServerStep.WAITING_ON_APPLICATION or check_completion(
            "payment_acknowledged", self.step, ServerStep.WAITING_ON_APPLICATION, _ENDING
        )
        self._pending_payment = None
        if self.disconnected or not still_here:
            self.step = ServerStep.CLOSED
            return []
        out: list[ServerEffect] = [fx.Send(m.payment_ack(info))]
        if self._exhausted:
            # [Recommended] the ack goes out before the settlement starts (§7.3 step 4).
            return out + self._settle(CloseReason.CHANNEL_EXHAUSTED)
        if self._close_after_payment:
            return out + [fx.Send(m.close())] + self._closed(CloseReason.SERVER_REQUESTED_CLOSE)
        self.step = ServerStep.CHANNEL_OPEN
        return self._drain(out) if self._queue else out  # once per payment: no call for nothing

    def payment_ack_failed(self, why: str) -> list[ServerEffect]:
        """The application's ack Deferred failed: ``ERROR{OTHER}`` / UPDATE_PAYMENT_FAILED."""
        still_here = self.step is ServerStep.WAITING_ON_APPLICATION or check_completion(
            "payment_ack_failed", self.step, ServerStep.WAITING_ON_APPLICATION, _ENDING
        )
        self._pending_payment = None
        if self.disconnected or not still_here:
            self.step = ServerStep.CLOSED
            return []
        return self._violation(
            RemoteProtocolError(ErrorCode.OTHER, f"payment not accepted: {why}", CloseReason.UPDATE_PAYMENT_FAILED)
        )

    def _channel_script(self) -> ChannelScript:
        """The channel's scripts, built once per connection (payments are the hot path)."""
        record = self.record
        assert record is not None
        if self._script is None or self._script[0] != record.contract_txid:
            self._script = (
                record.contract_txid,
                ChannelScript(record.version, record.client_key, record.server_key, record.expiry),
            )
        return self._script[1]

    # -- closing (§8) -------------------------------------------------------------------------

    def _on_close(self, message: r.Close, now: int) -> list[ServerEffect]:
        step = self.step
        if step in (ServerStep.WAITING_ON_CLIENT_VERSION, ServerStep.WAITING_ON_UNSIGNED_REFUND) or (
            step is ServerStep.WAITING_ON_CONTRACT and self.major == 2
        ):
            return self._closed(CloseReason.CLIENT_REQUESTED_CLOSE)  # no channel state: send nothing
        if step is not ServerStep.CHANNEL_OPEN:
            # [Recommended] a state exists but nothing can be settled yet (v1 after
            # RETURN_REFUND, or the contract broadcast in progress): plain CLOSE.
            return [fx.Send(m.close())] + self._closed(CloseReason.CLIENT_REQUESTED_CLOSE)
        return self._settle(CloseReason.CLIENT_REQUESTED_CLOSE)

    def _on_error(self, e: r.Error, now: int) -> list[ServerEffect]:
        return self._closed(CloseReason.REMOTE_SENT_ERROR, f"{ErrorCode(e.code).name}: {e.explanation}")

    def _on_malformed(self, message: r.Malformed, now: int) -> list[ServerEffect]:
        raise RemoteProtocolError(ErrorCode.SYNTAX_ERROR, message.explanation)

    def _settle(self, reason: CloseReason) -> list[ServerEffect]:
        record = self.record
        assert record is not None
        if record.best_signature is None:
            # [Recommended] nothing was ever paid: nothing to settle; plain CLOSE (§8.2 step 4).
            return [fx.Send(m.close())] + self._closed(reason)
        self._settle_reason = reason
        self.step = ServerStep.SETTLING
        return [fx.SettleChannel(record.contract_txid, reason)]

    def settled(self, settlement_tx: bytes) -> list[ServerEffect]:
        """The settlement was broadcast (``SettleChannel`` completed): CLOSE{settlement} and
        close (§8.2 step 6)."""
        still_here = self.step is ServerStep.SETTLING or check_completion(
            "settled", self.step, ServerStep.SETTLING, _ENDING
        )
        if not still_here or self.disconnected:
            return []
        return self._late_open() + [fx.Send(m.close(settlement_tx))] + self._closed(self._settle_reason)

    def settle_failed(self, why: str, fee_unaffordable: bool) -> list[ServerEffect]:
        """The settlement could not be made or broadcast; the adapter keeps the channel and
        retries ([Recommended], §13 item 6). On the wire as §8.2 says: a fee above b is
        ``ERROR{BAD_TRANSACTION}`` / REMOTE_SENT_INVALID_MESSAGE (step 8); a failed broadcast
        sends nothing and closes with the reason at hand (step 7)."""
        still_here = self.step is ServerStep.SETTLING or check_completion(
            "settle_failed", self.step, ServerStep.SETTLING, _ENDING
        )
        if not still_here or self.disconnected:
            return []
        if fee_unaffordable:
            self._open_after_settle = False
            return self._violation(RemoteProtocolError(ErrorCode.BAD_TRANSACTION, why))
        return self._late_open() + self._closed(self._settle_reason, why)

    def _late_open(self) -> list[ServerEffect]:
        """CHANNEL_OPEN held back by an exhausting initial payment (see ``channel_stored``)."""
        if not self._open_after_settle:
            return []
        self._open_after_settle = False
        return [fx.Send(m.channel_open())]  # the application heard ChannelOpened at the contract

    # -- local commands -----------------------------------------------------------------------

    def close(self) -> list[ServerEffect]:
        """The server ends this connection without settling (§8.1): plain CLOSE."""
        if self.step is ServerStep.CLOSED:
            return []
        if self.step is ServerStep.SETTLING:
            return []
        if self.step in _PAYMENT_IN_FLIGHT and not self.disconnected:
            # A payment being stored is answered before the CLOSE (a resume taking the channel
            # over waits for it): the client learns that it counted.
            self._close_after_payment = True
            return []
        return [fx.Send(m.close())] + self._closed(CloseReason.SERVER_REQUESTED_CLOSE)

    def settled_elsewhere(self, settlement_tx: bytes) -> list[ServerEffect]:
        """The server settled this channel on its own (operator): CLOSE{settlement}, close
        with SERVER_REQUESTED_CLOSE. Nothing to do if this connection is already ending."""
        if self.step in (ServerStep.CLOSED, ServerStep.SETTLING) or self.disconnected:
            return []
        return [fx.Send(m.close(settlement_tx))] + self._closed(CloseReason.SERVER_REQUESTED_CLOSE)

    def connection_lost(self) -> list[ServerEffect]:
        """The transport is gone. Outstanding effects still complete (and store what they must)."""
        self.disconnected = True
        if self.step is ServerStep.CLOSED:
            return []
        busy = SERVER_MOVES[self.step] is Inbox.QUEUE or self.step in (
            ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE, ServerStep.SETTLING
        )
        if not busy:
            self.step = ServerStep.CLOSED
        self._queue.clear()
        self._ahead = 0
        return [fx.Close(CloseReason.CONNECTION_CLOSED)]


# -- the transition table ---------------------------------------------------------------------

# Entries are built with ``moves.on``, which checks each handler against its message class.
_Handler = Handler[ServerMachine, ServerEffect]


def _handles(*moves: tuple[type, _Handler]) -> Mapping[type, _Handler]:
    return handles(_EVERY_STEP, *moves)


#: Handled in every step that handles messages at all (§8, §1.3).
_EVERY_STEP: Final = (
    on(r.Close, ServerMachine._on_close),
    on(r.Error, ServerMachine._on_error),
    on(r.Malformed, ServerMachine._on_malformed),
)

#: Every step of the server's connection, and what it does with a message from the client:
#: handle the ones listed (anything else is ``ERROR{SYNTAX_ERROR}``), queue them while an effect
#: is outstanding, or ignore them. B.2 of the specification, plus our own waits.
SERVER_MOVES: Final[Mapping[ServerStep, Union[Mapping[type, _Handler], Inbox]]] = {
    ServerStep.WAITING_ON_CLIENT_VERSION: _handles(on(r.ClientVersion, ServerMachine._on_client_version)),
    ServerStep.LOOKING_UP_RESUME: Inbox.QUEUE,  # FindChannel
    ServerStep.WAITING_ON_SERVER_KEY: Inbox.QUEUE,  # NewServerKey
    ServerStep.WAITING_ON_UNSIGNED_REFUND: _handles(on(r.ProvideRefund, ServerMachine._on_provide_refund)),
    ServerStep.WAITING_ON_CONTRACT: _handles(on(r.ProvideContract, ServerMachine._on_provide_contract)),
    ServerStep.STORING_CHANNEL: Inbox.QUEUE,  # StoreServerChannel
    # The broadcast (BroadcastContract) is outstanding, but a CLOSE is answered at once (§8.2
    # step 3); anything else is out of order.
    ServerStep.WAITING_ON_MULTISIG_ACCEPTANCE: _handles(),
    ServerStep.CHANNEL_OPEN: _handles(on(r.UpdatePayment, ServerMachine._on_update_payment)),
    ServerStep.STORING_PAYMENT: Inbox.QUEUE,  # StorePayment
    ServerStep.WAITING_ON_APPLICATION: Inbox.QUEUE,  # NotifyPayment
    ServerStep.SETTLING: Inbox.IGNORE,  # §8.2 step 1: everything is ignored once settling
    ServerStep.CLOSED: Inbox.IGNORE,
}


def _with_payment(record: ServerChannelRecord, payment: "check.CheckedPayment") -> ServerChannelRecord:
    # Once per payment: replace_fields is dataclasses.replace for a fraction of the time.
    return replace_fields(record, best_value=payment.best_value, best_signature=payment.signature)
