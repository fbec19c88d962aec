"""Child process for the SIGKILL tests: writes payments to a store as fast as it can and prints
one line per write whose Deferred fired ("acknowledged"), like a server before PAYMENT_ACK."""

import sys

from twisted.internet import defer, reactor, task

from twisted_paychan.store.sqlite import SqliteChannelStore
from twisted_paychan.channel.records import ServerChannelRecord


def record(n: int) -> ServerChannelRecord:
    return ServerChannelRecord(
        contract_txid=bytes([n]) * 32, version=2, contract=b"c", value=10**9, expiry=2_000_000_000,
        server_key=b"\x02" * 33, client_key=b"\x03" * 33,
    )


async def main(path: str, channels: int) -> None:
    store = SqliteChannelStore(path, reactor)
    for n in range(1, channels + 1):
        await store.add_server_channel(record(n))
    print("ready", flush=True)

    async def pay(n: int) -> None:
        b = 0
        while True:
            b += 1
            await store.record_payment(bytes([n]) * 32, b, b"sig%d" % b)
            sys.stdout.write(f"ack {n} {b}\n")
            sys.stdout.flush()

    await defer.gatherResults([defer.ensureDeferred(pay(n)) for n in range(1, channels + 1)])


if __name__ == "__main__":
    task.react(lambda r: defer.ensureDeferred(main(sys.argv[1], int(sys.argv[2]))))
