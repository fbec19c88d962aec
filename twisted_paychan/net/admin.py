"""
The operator's line into a running server: one JSON request per line, one JSON answer per line,
on a Unix socket in the data directory (owner-only), used by ``paychan settle``.

    {"command": "settle", "contract": "<contract txid, display hex>"}   or   "contract": "all"
    -> {"results": [{"contract_txid": ..., "settlement_txid": ... | null, "error": ... | null}]}

It asks the :class:`ServerChannelManager`, which owns the channels: settling a channel whose
client is connected sends that client CLOSE with the settlement.
"""

from __future__ import annotations

import json
from typing import Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex, from_display_hex
from twisted_paychan.net.server_manager import SETTLEABLE, ServerChannelManager, SettleResult

__all__ = ["SETTLEABLE", "AdminFactory", "AdminProtocol", "settle_channels"]

#: One result as the operator sees it (display hex, or None, and the error's text).
ResultRow = dict[str, Optional[str]]
Answer = dict[str, Union[str, list[ResultRow]]]


def _row(result: SettleResult) -> ResultRow:
    return {
        "contract_txid": display_hex(result.contract_txid),
        "settlement_txid": display_hex(txid_of(result.settlement_tx)) if result.settlement_tx is not None else None,
        "error": result.error,
    }


async def settle_channels(manager: ServerChannelManager, which: str) -> list[ResultRow]:
    """Settle one channel (display-hex txid) or ``"all"`` settleable ones; one result each."""
    if which == "all":
        return [_row(r) for r in await manager.settle_all()]
    try:
        txid = from_display_hex(which)
    except ValueError:
        return [{"contract_txid": which, "settlement_txid": None, "error": "not a contract txid"}]
    try:
        raw = await manager.settle(txid)
    except KeyError:
        return [_row(SettleResult(txid, None, "this server stores no channel with that contract txid"))]
    except Exception as e:  # reported to the operator, channel kept (stuck) by the manager
        return [_row(SettleResult(txid, None, f"{type(e).__name__}: {e}"))]
    return [_row(SettleResult(txid, raw, None))]


class AdminProtocol(LineOnlyReceiver):
    MAX_LENGTH = 4096
    delimiter = b"\n"
    log = Logger()

    def __init__(self, manager: ServerChannelManager) -> None:
        self.manager = manager

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if request.get("command") != "settle" or not isinstance(request.get("contract"), str):
                raise ValueError("expected {\"command\": \"settle\", \"contract\": TXID or \"all\"}")
        except (ValueError, AttributeError) as e:
            self._answer({"error": str(e)})
            return
        self.log.info("operator: settle {which}", which=request["contract"])
        d = defer.ensureDeferred(settle_channels(self.manager, request["contract"]))
        d.addCallbacks(lambda results: self._answer({"results": results}),
                       lambda f: self._answer({"error": f.getErrorMessage()}))

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer({"error": "request too long"})

    def _answer(self, answer: Answer) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(answer).encode() + self.delimiter)  # sendLine, typed
            self.transport.loseConnection()


class AdminFactory(Factory):
    noisy = False

    def __init__(self, manager: ServerChannelManager) -> None:
        self.manager = manager

    def buildProtocol(self, addr: Optional[IAddress]) -> AdminProtocol:
        return AdminProtocol(self.manager)
