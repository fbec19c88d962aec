"""
What ``paychan pay`` checks before it locks money or pays, and what it tells the user about
the channel it got.

* :func:`check_arguments`: what the command line alone shows is impossible (``--amount`` above
  ``--value``, more in total than a channel holds).
* :func:`settled_while_away`: a stored open channel to this server whose contract output is
  spent on the chain (the server settled while the client was not running) is recorded as
  settled, and said, before ``connect`` would try to resume it and open a new one.
* :func:`check_funds`: with no channel to resume, a wallet that cannot hold ``--value`` is
  refused before anything is sent ("insufficient funds: need X, have Y").
* :func:`check_channel_can_pay`: once the channel is open, the payments asked for must fit
  in what it has left, or none is made.
* :func:`opened_line`: the line that says what was locked and what the server took at once.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Union

from twisted.internet import defer, task

from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.types import OutPoint, SpendEvent, display_hex
from twisted_paychan.channel import client_lifecycle as lc
from twisted_paychan.channel.records import ClientChannelRecord, ClientChannelState
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.net.client_manager import ClientChannelManager

#: How long to wait for the store to record a settlement found on the chain.
_RECORD_WAIT = 30.0


def sats(value: int) -> str:
    """``1,000,000 sat``: thousands separated, as a person reads an amount."""
    return f"{value:,} sat"


def check_arguments(args: argparse.Namespace) -> None:
    if args.amount > args.value:
        raise UserError(f"--amount {args.amount} is more than --value {args.value}: one payment cannot be "
                        "larger than the channel; lower --amount or raise --value")
    if args.amount * args.count > args.value:
        raise UserError(f"{args.count} payments of {args.amount} sat ({sats(args.amount * args.count)}) are more "
                        f"than a channel of --value {args.value} can pay; lower --count or raise --value")


async def settled_while_away(reactor: Any, manager: ClientChannelManager, server_id: bytes,
                             out: Output) -> list[str]:
    """Record, and say, each stored open channel to this server that its server settled (or
    that was refunded) while no client process ran; their txids, displayed."""
    chain = manager.chain
    candidates = [r for r in await manager.list_channels()
                  if r.server_id == server_id and r.state is ClientChannelState.OPEN]
    if not candidates:
        return []
    spent: dict[bytes, SpendEvent] = {}
    watches = []
    for record in candidates:
        def seen(event: SpendEvent, txid: bytes = record.contract_txid) -> None:
            if event.spending_tx is not None:
                spent[txid] = event
        watches.append(chain.watch_spend(OutPoint(record.contract_txid, 0), seen))
    try:
        poll = getattr(chain, "poll", None)
        if poll is not None:  # RpcChain: one poll runs each new watch's look back
            await poll()
        await task.deferLater(reactor, 0, lambda: None)  # the embedded chain delivers on the next turn
    finally:
        for watch in watches:
            watch.cancel()
    if not spent:
        return []
    Ended = Union[lc.ChannelSettled, lc.ChannelRefunded]
    ended: dict[bytes, defer.Deferred[Ended]] = {txid: defer.Deferred() for txid in spent}

    def heard(event: lc.ChannelEvent) -> None:
        waiting = ended.get(event.contract_txid)
        if waiting is not None and not waiting.called and isinstance(event, (lc.ChannelSettled, lc.ChannelRefunded)):
            waiting.callback(event)

    unsubscribe = manager.subscribe(heard)
    try:
        for record in candidates:
            if record.contract_txid in spent:
                manager.follow(record)
        said = []
        for txid, waiting in ended.items():
            waiting.addTimeout(_RECORD_WAIT, reactor)
            try:
                event = await waiting
            except defer.TimeoutError:
                continue
            how = "settled by the server" if isinstance(event, lc.ChannelSettled) else "refunded"
            record = next(r for r in candidates if r.contract_txid == txid)
            out.stderr.write(
                f"channel {display_hex(txid)} was {how} while this client was away "
                f"(by {display_hex(txid_of(event.tx))}; {sats(record.value - record.client_change)} of "
                f"{sats(record.value)} paid); recorded\n")
            said.append(display_hex(txid))
        return said
    finally:
        unsubscribe()


async def check_funds(manager: ClientChannelManager, server_id: bytes, version: int, value: int,
                      now: int) -> None:
    """With no stored channel to resume, the wallet must hold ``value`` (and the contract's
    fee, which only funding knows exactly)."""
    from twisted_paychan.net.client import find_resumable

    if await find_resumable(manager.store, server_id, version, now) is not None:
        return
    balance = await manager.wallet.balance()
    if balance.total < value:
        raise UserError(f"insufficient funds: need {sats(value)} plus the contract fee, have "
                        f"{sats(balance.total)}; fund the wallet (paychan wallet new-address) or lower --value")


def check_channel_can_pay(record: Optional[ClientChannelRecord], amount: int, count: int) -> None:
    if record is None:
        return
    left = record.client_change
    if amount * count > left:
        can = left // amount if amount else count
        raise UserError(
            f"channel {display_hex(record.contract_txid)} has {sats(left)} left: {count} payments of "
            f"{sats(amount)} do not fit ({can} would); nothing was paid. Lower --count, or close it "
            "(paychan close) and open a larger one")


def opened_line(record: Optional[ClientChannelRecord], resumed: bool, contract_txid: bytes) -> str:
    txid = display_hex(contract_txid)
    if record is None:
        return f"channel {txid} {'resumed' if resumed else 'opened'}"
    if resumed:
        return (f"channel resumed: {txid}, {sats(record.client_change)} of {sats(record.value)} left")
    initial = record.value - record.client_change
    return (f"channel opened: {sats(record.value)} locked, {sats(initial)} initial payment required by the "
            f"server (contract {txid})")
