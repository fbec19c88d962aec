"""``paychan pay --window W``: the payments of one run with up to W in flight (pipelining), each
reported as it is acknowledged, in order, as the one-at-a-time loop of ``cli.pay`` reports them."""

from __future__ import annotations

from typing import Any, Optional

from twisted_paychan.cli.output import Output
from twisted_paychan.net.client_channel import PaymentAck
from twisted_paychan.net.pipelined import pay_windowed


async def pipelined_payments(conn: Any, args: Any, info: Optional[bytes], out: Output) -> int:
    """Pay ``args.count`` times ``args.amount`` over ``conn`` with ``args.window`` in flight;
    returns what was paid. Failures propagate (ChannelClosed, ChannelUsageError)."""
    count = args.count

    def acked(i: int, ack: PaymentAck) -> None:
        if count <= 20 or (i + 1) % max(1, count // 10) == 0:
            out.stderr.write(f"  payment {i + 1}/{count}: {ack.amount} sat acknowledged\n")

    return await pay_windowed(conn.pay, count, args.amount, info, args.window, acked)
