"""
The ``log`` payment handler, ``twistd paychan``'s default: one log line when a channel opens on
a connection, one per payment (with ``--verbose`` only), one when the connection ends, each
naming the peer. It accepts
every payment (the PAYMENT_ACK carries no info). And ``accept``, which accepts every payment and
says nothing: a log line per payment costs about as much server CPU as the payment itself
(doc/handlers.md), which a busy server may not want to pay.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_paychan import logs
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.handlers import HandlerArgumentError, HandlerFactory, IPaymentHandlerMaker
from twisted_paychan.net.server_channel import IServerHandler, NullServerHandler


def peer_name(address: Optional[IAddress]) -> str:
    """``host:port`` of an IP peer, else the address as Twisted prints it ("-" for none)."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None:
        return f"{host}:{port}" if port is not None else str(host)
    return "-" if address is None else str(address)


@implementer(IServerHandler)
class LoggingHandler:
    log = Logger(namespace="paychan.payments")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.contract_txid: Optional[str] = None

    def channel_opened(self, contract_txid: bytes) -> None:
        self.contract_txid = display_hex(contract_txid)
        self.log.info("channel {txid} (peer {peer}): opened", txid=self.contract_txid, peer=self.peer)

    def payment_received(self, contract_txid: bytes, increase: int, total: int, info: Optional[bytes]) -> None:
        if not logs.verbose:  # a line per payment only when asked for (``--verbose``): see ``logs``
            return
        self.log.info("channel {txid} (peer {peer}): payment of {increase} sat, {total} sat in all",
                      txid=self.contract_txid or display_hex(contract_txid), increase=increase, peer=self.peer,
                      total=total)

    def channel_closed(self, reason: CloseReason) -> None:
        if self.contract_txid is not None:
            self.log.info("channel {txid} (peer {peer}): connection ended ({reason})", txid=self.contract_txid,
                          peer=self.peer, reason=reason.name)


@implementer(IPlugin, IPaymentHandlerMaker)
class LogHandlerMaker:
    name = "log"
    usage = "log"
    description = "Log each channel opened, payment and connection end (the default)."

    def check(self, arg: Optional[str]) -> None:
        if arg:
            raise HandlerArgumentError("the log handler takes no argument")

    def make(self, arg: Optional[str], reactor: Any) -> HandlerFactory:
        def handler_for(address: Optional[IAddress]) -> IServerHandler:
            return LoggingHandler(peer_name(address))

        return handler_for


@implementer(IPlugin, IPaymentHandlerMaker)
class AcceptHandlerMaker:
    name = "accept"
    usage = "accept"
    description = "Accept every payment and log none of them (the channel events are still logged)."

    def check(self, arg: Optional[str]) -> None:
        if arg:
            raise HandlerArgumentError("the accept handler takes no argument")

    def make(self, arg: Optional[str], reactor: Any) -> HandlerFactory:
        handler = NullServerHandler()  # no state: one serves every connection
        return lambda address: handler
