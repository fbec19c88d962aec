"""
What the server's ``signer:`` wallet backend and ``paychan signer`` say to each other: Twisted
AMP commands (length-prefixed key/value boxes, one answer per request, many requests in flight
on one connection).

The signer never receives a digest to sign: each command carries what the signature is *for*
(the contract, the client's signed payment, the refund, the coins) and the signer builds or
checks the transaction itself, so a compromised server can only ask for what the rules in
``signer.policy`` allow. A refusal is the AMP error ``REFUSED`` with the reason; a signer that
is not reachable is the backend's :class:`SignerUnavailable`.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.protocols import amp

#: Said in :class:`Hello`; a backend refuses a signer that speaks another.
PROTOCOL_VERSION = 1


class Refused(Exception):
    """The signer will not sign this: the message is its reason, as it logged it."""


class SignerUnavailable(Exception):
    """The signer did not answer (not running, unreachable, the connection dropped)."""


class Insufficient(Exception):
    """The coins handed over cannot pay it: ``"NEEDED AVAILABLE"`` in satoshis (the backend
    raises ``InsufficientFunds`` with them)."""


_ERRORS: dict[type[Exception], bytes] = {Refused: b"REFUSED"}

#: A coin as the server's chain sees it, handed to the signer to spend.
COIN = amp.AmpList([
    (b"txid", amp.String()),
    (b"index", amp.Integer()),
    (b"value", amp.Integer()),
    (b"script", amp.String()),
    (b"height", amp.Integer(optional=True)),
    (b"coinbase", amp.Boolean()),
])


class Hello(amp.Command):
    """First on each connection: the signer's network and protocol version."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"network", amp.Unicode()), (b"version", amp.Integer())]


#: Entries of a list in one answer or request: an AMP value is at most 65535 bytes, and an entry
#: (a key or a coin with its field names) is under 120.
PAGE = 400


class Scripts(amp.Command):
    """The receive and payout keys handed out, from the ``start``-th, at most :data:`PAGE`:
    each with its purpose (``receive``, ``payout``) and the script type its coins are paid to;
    what the server needs to follow the signer's money on the chain. ``next`` is where the next
    page starts, absent after the last."""

    arguments = [(b"start", amp.Integer())]
    response = [(b"keys", amp.AmpList([(b"public_key", amp.String()), (b"purpose", amp.Unicode()),
                                       (b"script_type", amp.Unicode())])),
                (b"next", amp.Integer(optional=True))]


class ChannelKey(amp.Command):
    """A new channel key for a server handshake: stored by the signer before it answers."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"public_key", amp.String())]
    errors = _ERRORS


class PayoutScript(amp.Command):
    """The payout script for the settlement of the channel ``label`` (its contract txid), or the
    wallet's shared one (empty label)."""

    arguments = [(b"label", amp.String())]
    response = [(b"script", amp.String()), (b"public_key", amp.String())]
    errors = _ERRORS


class NewAddress(amp.Command):
    """A fresh receive script (``p2wpkh`` or ``p2pkh``)."""

    arguments = [(b"script_type", amp.Unicode())]
    response = [(b"script", amp.String()), (b"public_key", amp.String())]
    errors = _ERRORS


class SignSettlement(amp.Command):
    """Build and sign the settlement of a channel: the contract (whose output 0 it spends), the
    channel's terms and the client's signed best payment. The signer chooses the payout script
    (its own, for this channel: ``payout_key``, so the server follows its coins). ``settlement``
    is empty when no rate of ``rates`` is affordable; then ``fee``/``rate`` name the cheapest
    refusal (``fee`` -1: none known)."""

    arguments = [
        (b"version", amp.Integer()),
        (b"contract", amp.String()),
        (b"client_key", amp.String()),
        (b"server_key", amp.String()),
        (b"expiry", amp.Integer()),
        (b"client_change", amp.Integer()),
        (b"client_signature", amp.String()),
        (b"rates", amp.ListOf(amp.Integer())),
    ]
    response = [(b"settlement", amp.String()), (b"rate", amp.Integer()), (b"fee", amp.Integer()),
                (b"payout_key", amp.String())]
    errors = _ERRORS


class SignRefund(amp.Command):
    """Protocol v1: the server's NONE|ANYONECANPAY signature on the client's refund, once per
    channel key, for a refund locked until ``expiry``."""

    arguments = [
        (b"client_key", amp.String()),
        (b"server_key", amp.String()),
        (b"expiry", amp.Integer()),
        (b"refund", amp.String()),
    ]
    response = [(b"signature", amp.String())]
    errors = _ERRORS


class Fund(amp.Command):
    """Pay ``amount`` to ``script`` from ``coins`` (the signer's, as the server's chain sees
    them; at most :data:`PAGE`), change to the signer's payout script; within the daily limit.
    ``amount`` 0 is a sweep: every coin, into one output."""

    arguments = [
        (b"script", amp.String()),
        (b"amount", amp.Integer()),
        (b"fee_rate", amp.Integer()),
        (b"coins", COIN),
    ]
    response = [
        (b"tx", amp.String()),
        (b"txid", amp.String()),
        (b"fee", amp.Integer()),
        (b"change_index", amp.Integer(optional=True)),
    ]
    errors = {**_ERRORS, Insufficient: b"INSUFFICIENT"}
