"""
What a state machine asks its adapter to do.

A machine method returns a list of effects, to be carried out in order. Effects that take time
(store, broadcast, fund, ask the application) are answered by the adapter calling the machine's
matching completion method (named in each docstring) once they are done; a machine never has
more than one such effect outstanding, because the protocol is sequential per channel.

Effects are slotted: a payment makes three on each side, and slotted ones are quicker to build.
Each side's effects form a closed union (:data:`ServerEffect`, :data:`ClientEffect`): a runner
that dispatches on them can be checked for exhaustiveness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from twisted_paychan.chain.types import FundedTransaction
from twisted_paychan.channel.errors import CloseReason, RemoteProtocolError
from twisted_paychan.channel.records import ClientChannelRecord, ServerChannelRecord
from twisted_paychan.wire import messages as m


@dataclass(frozen=True, slots=True)
class Send:
    """Write this message to the peer."""

    message: m.TwoWayChannelMessage


def send_error(e: RemoteProtocolError) -> list[Send]:
    """The ``Send(ERROR)`` that tells the peer about its violation ``e``, or nothing when ``e``
    carries no wire code; both machines follow it with their own close."""
    if e.code is None:
        return []
    return [Send(m.error(m.ErrorCode.Value(e.code.name), e.explanation, e.expected_value))]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection (after every Send before it has been written) for ``reason``."""

    reason: CloseReason
    detail: str = ""


# -- server -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewServerKey:
    """Get a fresh channel key from the wallet -> ``server_key_ready(signer)``."""


@dataclass(frozen=True, slots=True)
class FindChannel:
    """Look up a stored server channel to resume -> ``resume_found(record)`` or
    ``resume_not_found()``."""

    contract_txid: bytes


@dataclass(frozen=True, slots=True)
class BroadcastContract:
    """Broadcast the client's contract -> ``contract_accepted()`` or ``contract_rejected(why)``."""

    tx: bytes
    contract_txid: bytes


@dataclass(frozen=True, slots=True)
class StoreServerChannel:
    """Durably store a new server record -> ``channel_stored()``."""

    record: ServerChannelRecord


@dataclass(frozen=True, slots=True)
class StorePayment:
    """Durably record the new best payment -> ``payment_stored()``."""

    contract_txid: bytes
    best_value: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class NotifyPayment:
    """Tell the application the server's value grew (the payment is stored) ->
    ``payment_acknowledged(info)`` or ``payment_ack_failed(why)``. Not awaited (no completion)
    for the initial payment and for a payment stored after the connection ended: there is no
    PAYMENT_ACK to send for those."""

    contract_txid: bytes
    increase: int
    total: int
    info: Optional[bytes]
    awaited: bool


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The channel is open on this connection (new or resumed): stored, its contract accepted.
    Comes before the NotifyPayment of the initial payment, even when the wire's CHANNEL_OPEN
    is held back (an exhausting initial payment) or the client has gone."""

    contract_txid: bytes
    resumed: bool


@dataclass(frozen=True, slots=True)
class SettleChannel:
    """Build, store and broadcast the settlement of this channel -> ``settled(tx)`` or
    ``settle_failed(why, fee_unaffordable)``."""

    contract_txid: bytes
    reason: CloseReason


# -- client -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FundContract:
    """Have the wallet fund ``value`` to ``script_pubkey`` as output 0 -> ``contract_funded(tx)``
    or ``funding_failed(why)``."""

    script_pubkey: bytes
    value: int


@dataclass(frozen=True, slots=True)
class StoreClientChannel:
    """Durably store the new client record, refund included -> ``channel_stored()``."""

    record: ClientChannelRecord


@dataclass(frozen=True, slots=True)
class StoreClientChange:
    """Durably record c before the payment that signs it leaves -> ``change_stored()``."""

    contract_txid: bytes
    client_change: int


@dataclass(frozen=True, slots=True)
class ReleaseContract:
    """The funded contract will never be sent: give its coins back to the wallet."""

    funded: FundedTransaction


@dataclass(frozen=True, slots=True)
class PaymentAcked:
    """The server acknowledged the payment in flight."""

    amount: int
    info: Optional[bytes]


@dataclass(frozen=True, slots=True)
class SettlementSeen:
    """The server sent a settlement that validly spends the contract."""

    contract_txid: bytes
    tx: bytes


@dataclass(frozen=True, slots=True)
class ResumeRefused:
    """The server answered our resume with INITIATE: the stored channel is free again."""

    contract_txid: bytes


#: Everything a :class:`~twisted_paychan.channel.server.ServerMachine` may ask for.
ServerEffect = Union[
    Send,
    Close,
    NewServerKey,
    FindChannel,
    BroadcastContract,
    StoreServerChannel,
    StorePayment,
    NotifyPayment,
    ChannelOpened,
    SettleChannel,
]

#: Everything a :class:`~twisted_paychan.channel.client.ClientMachine` may ask for.
ClientEffect = Union[
    Send,
    Close,
    FundContract,
    StoreClientChannel,
    StoreClientChange,
    ReleaseContract,
    ChannelOpened,
    PaymentAcked,
    SettlementSeen,
    ResumeRefused,
]
