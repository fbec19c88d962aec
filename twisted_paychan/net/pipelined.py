"""
Paying many times over one channel with up to W payments in flight (``max_in_flight``).

The channel itself keeps the money rules (each c stored before its UPDATE_PAYMENT leaves) and the
order of the acks; this is only the loop an application writes around ``pay()``: keep W
payments outstanding, hand each ack over in order, and when one fails let the failure of the
others (the same ERROR or disconnect) be consumed rather than logged as unhandled.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

from twisted.internet import defer

from twisted_paychan.net.client_channel import PaymentAck

#: ``pay(amount, info)`` of a ``ClientConnection`` or ``ClientChannel``.
Pay = Callable[[int, Optional[bytes]], "defer.Deferred[PaymentAck]"]


async def pay_windowed(pay: Pay, count: int, amount: int, info: Optional[bytes], window: int,
                       acked: Callable[[int, PaymentAck], None] = lambda index, ack: None,
                       stopping: Callable[[], bool] = lambda: False) -> int:
    """Make ``count`` payments of ``amount`` with up to ``window`` in flight; ``acked(i, ack)``
    for each in order. Once ``stopping()`` is true no new payment is made and those in flight
    are waited for. Returns what was paid; raises the first failure (ChannelClosed, or the
    ChannelUsageError of a payment that cannot be made)."""
    pending: deque[defer.Deferred[PaymentAck]] = deque()
    paid = done = 0
    try:
        for _ in range(count):
            if stopping():
                break
            if len(pending) >= window:
                ack = await pending.popleft()
                paid += ack.amount
                acked(done, ack)
                done += 1
                if stopping():
                    break
            pending.append(pay(amount, info))
        while pending:
            ack = await pending.popleft()
            paid += ack.amount
            acked(done, ack)
            done += 1
    except BaseException:
        for d in pending:
            d.addErrback(lambda f: None)  # the same end as the one raised
        raise
    return paid
