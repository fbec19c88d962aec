"""
A payment handler of one's own for ``twistd paychan``: ``ledger:PATH`` appends one JSON line per
payment to the file PATH (synced before the payment is acknowledged) and gives the client the
line's number as its receipt, in the PAYMENT_ACK's info.

It is found by Twisted's plugin scan through ``twisted/plugins/ledger_plugin.py`` next to this
file: put this directory on ``PYTHONPATH`` (or install it as a package that ships both files)::

    PYTHONPATH=examples/twistd_handler twistd -n paychan --handler ledger:/var/lib/paychan/ledger.jsonl
    PYTHONPATH=examples/twistd_handler twistd paychan --help-handlers

doc/handlers.md explains each piece.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from twisted.internet.interfaces import IAddress
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.errors import CloseReason
from twisted_paychan.handlers import HandlerArgumentError, HandlerFactory, IPaymentHandlerMaker
from twisted_paychan.handlers.log import peer_name
from twisted_paychan.net.server_channel import IServerHandler


class Ledger:
    """The file, shared by every connection; one line per payment."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "a+", encoding="utf-8") as f:
            f.seek(0)
            self.lines = sum(1 for _ in f)

    def append(self, entry: dict[str, Any]) -> int:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())  # on disk before the client is told it counted
        self.lines += 1
        return self.lines


@implementer(IServerHandler)
class LedgerHandler:
    def __init__(self, ledger: Ledger, peer: str) -> None:
        self.ledger = ledger
        self.peer = peer

    def channel_opened(self, contract_txid: bytes) -> None:
        pass

    def payment_received(self, contract_txid: bytes, increase: int, total: int, info: Optional[bytes]) -> bytes:
        line = self.ledger.append({"contract_txid": display_hex(contract_txid), "peer": self.peer,
                                   "increase": increase, "total": total,
                                   "info": info.decode("utf-8", "replace") if info is not None else None})
        return f"ledger entry {line}".encode()

    def channel_closed(self, reason: CloseReason) -> None:
        pass


@implementer(IPlugin, IPaymentHandlerMaker)
class LedgerHandlerMaker:
    name = "ledger"
    usage = "ledger:PATH"
    description = "Append each payment to the JSON-lines file PATH; the receipt is its line number."

    def check(self, arg: Optional[str]) -> None:
        if not arg:
            raise HandlerArgumentError("the ledger handler needs a file: --handler ledger:PATH")
        directory = os.path.dirname(os.path.abspath(arg))
        if not os.path.isdir(directory):
            raise HandlerArgumentError(f"the ledger's directory {directory} does not exist")

    def make(self, arg: Optional[str], reactor: Any) -> HandlerFactory:
        assert arg is not None
        ledger = Ledger(arg)

        def handler_for(address: Optional[IAddress]) -> IServerHandler:
            return LedgerHandler(ledger, peer_name(address))

        return handler_for
