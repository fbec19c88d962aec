"""``paychan pay --window W``: the payments of one run with up to W in flight (pipelining), each
reported as it is acknowledged, in order, as the one-at-a-time loop of ``cli.pay`` reports them."""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted_paychan.cli.output import Output
from twisted_paychan.net.client_channel import PaymentAck
from twisted_paychan.net.pipelined import pay_windowed


async def pipelined_payments(conn: Any, args: Any, info: Optional[bytes], out: Output,
                             stopping: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """Pay ``args.count`` times ``args.amount`` over ``conn`` with ``args.window`` in flight;
    returns what was paid and how many payments were acknowledged. Once ``stopping()`` (Ctrl-C,
    SIGTERM) no new payment leaves; those in flight finish. Failures propagate (ChannelClosed,
    ChannelUsageError)."""
    count = args.count
    done = 0

    def acked(i: int, ack: PaymentAck) -> None:
        nonlocal done
        done = i + 1
        if count <= 20 or (i + 1) % max(1, count // 10) == 0:
            out.stderr.write(f"  payment {i + 1}/{count}: {ack.amount} sat acknowledged\n")

    paid = await pay_windowed(conn.pay, count, args.amount, info, args.window, acked, stopping)
    return paid, done
