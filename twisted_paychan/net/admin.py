"""
The operator's line into a running server: one JSON request per line, one JSON answer per line,
on a Unix socket in the data directory (owner-only), used by ``paychan settle``.

    {"command": "settle", "contract": "<contract txid, display hex>"}   or   "contract": "all"
    -> {"results": [{"contract_txid": ..., "settlement_txid": ... | null, "error": ... | null}]}

Settling a channel whose client is connected sends that client CLOSE with the settlement.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex, from_display_hex
from twisted_paychan.channel.records import ServerChannelState

#: States a channel can be settled from on the operator's request.
SETTLEABLE = (ServerChannelState.OPEN, ServerChannelState.STUCK, ServerChannelState.SETTLING)


async def settle_channels(channels: Any, which: str) -> list[dict[str, Any]]:
    """Settle one channel (display-hex txid) or ``"all"`` settleable ones; one result each."""
    if which == "all":
        targets = [r.contract_txid for r in await channels.store.server_channels() if r.state in SETTLEABLE]
    else:
        try:
            targets = [from_display_hex(which)]
        except ValueError:
            return [{"contract_txid": which, "settlement_txid": None, "error": "not a contract txid"}]
    results = []
    for txid in targets:
        try:
            raw = await channels.settle_now(txid)
            results.append({"contract_txid": display_hex(txid), "settlement_txid": display_hex(txid_of(raw)),
                            "error": None})
        except Exception as e:  # reported to the operator, channel kept (stuck) by settle()
            results.append({"contract_txid": display_hex(txid), "settlement_txid": None,
                            "error": f"{type(e).__name__}: {e}"})
    return results


class AdminProtocol(LineOnlyReceiver):
    MAX_LENGTH = 4096
    delimiter = b"\n"
    log = Logger()

    def __init__(self, channels: Any) -> None:
        self.channels = channels

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if request.get("command") != "settle" or not isinstance(request.get("contract"), str):
                raise ValueError("expected {\"command\": \"settle\", \"contract\": TXID or \"all\"}")
        except (ValueError, AttributeError) as e:
            self._answer({"error": str(e)})
            return
        self.log.info("operator: settle {which}", which=request["contract"])
        d = defer.ensureDeferred(settle_channels(self.channels, request["contract"]))
        d.addCallbacks(lambda results: self._answer({"results": results}),
                       lambda f: self._answer({"error": f.getErrorMessage()}))

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer({"error": "request too long"})

    def _answer(self, answer: dict) -> None:
        self.sendLine(json.dumps(answer).encode())
        if self.transport is not None:
            self.transport.loseConnection()


class AdminFactory(Factory):
    noisy = False

    def __init__(self, channels: Any) -> None:
        self.channels = channels

    def buildProtocol(self, addr: Any) -> AdminProtocol:
        return AdminProtocol(self.channels)
