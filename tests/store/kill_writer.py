"""Child process for the SIGKILL tests: writes to a store as fast as it can and prints one line
per write whose Deferred fired ("acknowledged"), like a server before PAYMENT_ACK.

Payments print ``ack N B``. With ``transitions``, channel N stops paying at b = ``settle_at(N)``
and then moves along SETTLING -> STUCK -> SETTLING ... with ``updated_at`` counting the moves,
printing ``moved N K`` after the K-th: each line is a transition the store called durable."""

import sys

from twisted.internet import defer, reactor, task

from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.store.sqlite import SqliteChannelStore


def record(n: int) -> ServerChannelRecord:
    return ServerChannelRecord(
        contract_txid=bytes([n]) * 32, version=2, contract=b"c", value=10**9, expiry=2_000_000_000,
        server_key=b"\x02" * 33, client_key=b"\x03" * 33,
    )


def settle_at(n: int) -> int:
    """Where channel ``n`` stops paying in the ``transitions`` mode: early, and not all at once."""
    return 5 + 7 * n


async def main(path: str, channels: int, transitions: bool) -> None:
    store = SqliteChannelStore(path, reactor)
    for n in range(1, channels + 1):
        await store.add_server_channel(record(n))
    print("ready", flush=True)

    async def pay(n: int) -> None:
        txid = bytes([n]) * 32
        b = 0
        while not transitions or b < settle_at(n):
            b += 1
            await store.record_payment(txid, b, b"sig%d" % b)
            sys.stdout.write(f"ack {n} {b}\n")
            sys.stdout.flush()
        state = ServerChannelState.OPEN
        k = 0
        while True:
            new = ServerChannelState.STUCK if state is ServerChannelState.SETTLING else ServerChannelState.SETTLING
            k += 1
            await store.transition_server(txid, state, new, note=f"move {k}", updated_at=k)
            state = new
            sys.stdout.write(f"moved {n} {k}\n")
            sys.stdout.flush()

    await defer.gatherResults([defer.ensureDeferred(pay(n)) for n in range(1, channels + 1)])


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else ""
    task.react(lambda r: defer.ensureDeferred(main(sys.argv[1], int(sys.argv[2]), mode == "transitions")))
