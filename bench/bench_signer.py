"""How long the server waits for ``paychan signer`` over a real Unix socket: a channel key (what
each new channel's handshake waits for) and a settlement (built, checked, signed, its best
payment and payout key stored durably first), one after another.

    .venv/bin/python bench/bench_signer.py [--count N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task

from twisted_paychan.bitcoin.addresses import REGTEST
from twisted_paychan.bitcoin.keys import Signer
from twisted_paychan.bitcoin.payment import sign_payment
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.transactions import make_transaction, serialize, tx_input, tx_output
from twisted_paychan.bitcoin.txid import txid
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.constants import FINAL_SEQUENCE, TX_VERSION
from twisted_paychan.signer import protocol as p
from twisted_paychan.signer.endpoints import client_endpoint, server_endpoint
from twisted_paychan.signer.ledger import Ledger
from twisted_paychan.signer.service import SignerFactory, SigningService
from twisted_paychan.wallet.crypto import ScryptParams
from twisted_paychan.wallet.remote import SignerLink, SignerWallet
from twisted_paychan.wallet.sqlite import SqliteWallet

VALUE = 1_000_000
CHANGE = 400_000


def _settlement_request(service: SigningService, client: Signer) -> dict[str, Any]:
    server_key = service.channel_key()
    expiry = int(reactor.seconds()) + 86400
    channel = ChannelScript(2, client.public_key, server_key, expiry)
    contract = make_transaction([tx_input(b"\x11" * 32, 0, FINAL_SEQUENCE)], [tx_output(VALUE, channel.script_pubkey)],
                                0, TX_VERSION)
    return {"version": 2, "contract": serialize(contract), "client_key": client.public_key, "server_key": server_key,
            "expiry": expiry, "client_change": CHANGE,
            "client_signature": sign_payment(client, channel, txid(contract), CHANGE), "rates": [1000]}


async def run(count: int) -> None:
    directory = Path(tempfile.mkdtemp())
    wallet_file = directory / "wallet.sqlite"
    keys = SqliteWallet.open(wallet_file, None, passphrase="bench", scrypt=ScryptParams(n=2**10, r=8, p=1))
    service = SigningService(keys, Ledger(str(directory / "signer.sqlite")), reactor, daily_limit=0)
    socket = directory / "socket" / "signer.sock"
    port = await server_endpoint(reactor, f"unix:{socket}").listen(SignerFactory(service))
    link = SignerLink(client_endpoint(reactor, f"unix:{socket}"), reactor, REGTEST, "bench")
    wallet = SignerWallet(MemoryChain(reactor), REGTEST, link)
    wallet.start()
    while wallet.signer_problem() is not None:
        await task.deferLater(reactor, 0.01, lambda: None)
    try:
        start = time.perf_counter()
        for _ in range(count):
            await wallet.provisional_channel_key()
        per_key = (time.perf_counter() - start) / count
        client = Signer(bytes(31) + b"\x07")
        requests = [_settlement_request(service, client) for _ in range(count)]
        start = time.perf_counter()
        for request in requests:
            await link.call(p.SignSettlement, **request)
        per_settlement = (time.perf_counter() - start) / count
        print(f"channel key: {per_key * 1000:.2f} ms per round trip; settlement: {per_settlement * 1000:.2f} ms "
              f"each ({count} of each, one at a time, Unix socket)")
    finally:
        wallet.close()
        await port.stopListening()
        keys.close()
        service.ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    failure: list[Any] = []
    d = defer.ensureDeferred(run(args.count))
    d.addErrback(failure.append).addBoth(lambda _: reactor.stop())
    reactor.run()
    if failure:
        failure[0].raiseException()


if __name__ == "__main__":
    main()
