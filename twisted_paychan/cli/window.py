"""``paychan pay --window W``: the payments of one run with up to W in flight (pipelining), each
reported as it is acknowledged, in order, as the one-at-a-time loop of ``cli.pay`` reports them.

With several ``--server`` (a :class:`~twisted_paychan.net.failover.FailoverConnection`, any
window) a dropped connection is said in one line, the channel resumed on the next server, and
the run goes on until ``--count`` payments are acknowledged: those in flight at the drop were
not, and are not counted (their amounts are in the channel's paid total all the same)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted_paychan.chain.types import display_hex
from twisted_paychan.channel.errors import ChannelClosed, CloseReason
from twisted_paychan.cli.output import Output, UserError
from twisted_paychan.net.failover import AllEndpointsFailed, FailoverConnection, NotResumable, Resumed
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
    paid = 0
    before = 0  # acknowledged before the current connection

    def acked(i: int, ack: PaymentAck) -> None:
        nonlocal done, paid
        done = before + i + 1
        paid += ack.amount
        if count <= 20 or done % max(1, count // 10) == 0:
            out.stderr.write(f"  payment {done}/{count}: {ack.amount} sat acknowledged\n")

    if not isinstance(conn, FailoverConnection):
        await pay_windowed(conn.pay, count, args.amount, info, args.window, acked, stopping)
        return paid, done

    def resumed(r: Resumed) -> None:
        out.stderr.write(f"channel {display_hex(r.contract_txid)} resumed on {r.endpoint}\n")

    conn.on_resumed.append(resumed)
    while True:
        try:
            await pay_windowed(conn.pay, count - done, args.amount, info, args.window, acked, stopping)
            return paid, done
        except ChannelClosed as e:
            if stopping() and e.reason is CloseReason.CONNECTION_CLOSED:
                return paid, done  # Ctrl-C: no fail-over (a wait for one ends at once); the channel is kept
            if not conn.dropped:
                raise
            from twisted_paychan.cli.errors import closed_in_words

            out.stderr.write(f"connection to {conn.endpoint} lost after {done} of {count} payment(s) "
                             f"({closed_in_words(e)}); "
                             "resuming the channel on the next server\n")
            before = done
        except AllEndpointsFailed as e:
            raise UserError(f"paying stopped after {done} of {count} payment(s), {paid:,} sat acknowledged: {e}; "
                            "the channel is kept: the next paychan pay resumes it") from None
        except NotResumable as e:
            raise UserError(f"paying stopped after {done} of {count} payment(s), {paid:,} sat acknowledged: {e} "
                            "(paychan channels says why)") from None
