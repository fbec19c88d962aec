"""
``paychan watch --data-dir DIR --chain URL``: keep the client's channels safe while no payment
is being made. Runs until interrupted: records settlements it sees on the chain, and from each
channel's expiry + 300 s broadcasts the contract and the refund, again on every block until the
refund confirms (a client that never runs this still has its refund stored, and the next run
picks up where it should). On stderr it says what it waits for (each open channel, and until
when before its refund is due), what it broadcast (the refund's txid), why a broadcast was not
taken (once per reason: a refund is non-final until the median time past passes its lock time),
and each channel that ends (settled, with the settlement's txid, or refunded), e.g. one
``paychan pay`` left exhausted and awaiting the server's settlement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import RejectKind, display_hex
from twisted_paychan.channel.records import ClientChannelState
from twisted_paychan.constants import CLIENT_REFUND_DELAY
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.cli.chains import open_chain, rpc_login
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.store.sqlite import StoreLocked, open_store


def _utc(when: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


async def run_watch(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.data_dir is None:
        raise UserError("paychan watch needs --data-dir (the client's channels)")
    if not (Path(args.data_dir) / "channels.sqlite").exists():
        raise UserError(f"no channel store in {args.data_dir}")
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        store = open_store(args.data_dir, reactor)
    except StoreLocked:
        await access.close()
        raise UserError(f"the channel store in {args.data_dir} is in use by another paychan process") from None
    channels = ClientChannelManager(None, access.chain, store, reactor)  # no wallet: it only watches
    stopped: Deferred[None] = Deferred()

    def shut_down() -> "Deferred[None]":
        # SIGINT/SIGTERM: the reactor waits for this before it stops.
        async def stop() -> None:
            channels.stop()
            await store.close()
            await access.close()
            if not stopped.called:
                stopped.callback(None)

        return Deferred.fromCoroutine(stop())

    refunds: dict[bytes, bytes] = {}  # contract txid -> the stored refund, to name what went out
    told: dict[bytes, tuple[str, str]] = {}  # what was last said of each channel's refusals

    def say(txid: bytes, text: str) -> None:
        out.stderr.write(f"channel {display_hex(txid)}: {text}\n")

    def report(event: lc.ChannelEvent) -> None:
        if isinstance(event, lc.ChannelExpiring):
            say(event.contract_txid, "expired: broadcasting the contract and the refund")
        elif isinstance(event, lc.RefundBroadcast):
            refund = refunds.get(event.contract_txid)
            say(event.contract_txid, "refund broadcast" + (f": {display_hex(txid_of(refund))}" if refund else ""))
        elif isinstance(event, lc.BroadcastNotAccepted):
            # Once per kind of refusal, not once per block.
            key = (event.role.value, event.kind.value)
            if told.get(event.contract_txid) != key:
                told[event.contract_txid] = key
                wait = (" (waiting for the median time past to pass its lock time; retried each block)"
                        if event.kind is RejectKind.NON_FINAL else "; retried each block")
                say(event.contract_txid, f"{event.role.value} not accepted yet: {event.reason}{wait}")
        elif isinstance(event, lc.ChannelSettled):
            out.stderr.write(f"channel {display_hex(event.contract_txid)}: settled by "
                             f"{display_hex(txid_of(event.tx))}\n")
        elif isinstance(event, lc.ChannelRefunded):
            out.stderr.write(f"channel {display_hex(event.contract_txid)}: refunded by "
                             f"{display_hex(txid_of(event.tx))}\n")

    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    channels.subscribe(report)
    waiting = [r for r in await store.client_channels()
               if r.state in (ClientChannelState.OPEN, ClientChannelState.EXPIRING)]
    refunds.update((r.contract_txid, r.refund) for r in waiting)
    await channels.start()
    out.stderr.write(f"watching the channels in {args.data_dir} on {access.description}; Ctrl-C to stop\n")
    for record in waiting:
        due = record.expiry + CLIENT_REFUND_DELAY
        say(record.contract_txid, f"{record.state.value}; waiting for its settlement, or until {_utc(due)} "
                                  f"(expiry + {CLIENT_REFUND_DELAY} s) to broadcast its refund")
    await stopped
    out.emit("stopped", {"stopped": True})
    return 0
