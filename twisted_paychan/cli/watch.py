"""
``paychan watch --data-dir DIR --chain URL``: keep the client's channels safe while no payment
is being made. Runs until interrupted: records settlements it sees on the chain, and from each
channel's expiry + 300 s broadcasts the contract and the refund, again on every block until the
refund confirms (a client that never runs this still has its refund stored, and the next run
picks up where it should). Each channel that ends is reported on stderr as it ends (settled,
with the settlement's txid, or refunded), e.g. one ``paychan pay`` left exhausted and awaiting
the server's settlement.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.cli.chains import open_chain, rpc_login
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.net.client_manager import ClientChannelManager
from twisted_paychan.store.sqlite import StoreLocked, open_store


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

    def report(event: lc.ChannelEvent) -> None:
        if isinstance(event, lc.ChannelSettled):
            out.stderr.write(f"channel {display_hex(event.contract_txid)}: settled by "
                             f"{display_hex(txid_of(event.tx))}\n")
        elif isinstance(event, lc.ChannelRefunded):
            out.stderr.write(f"channel {display_hex(event.contract_txid)}: refunded by "
                             f"{display_hex(txid_of(event.tx))}\n")

    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    channels.subscribe(report)
    await channels.start()
    out.stderr.write(f"watching the channels in {args.data_dir} on {access.description}; Ctrl-C to stop\n")
    await stopped
    out.emit("stopped", {"stopped": True})
    return 0
