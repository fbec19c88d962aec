"""
The remote signer: ``paychan signer``, a small process that holds the server's keys and signs
only what a payment-channel server needs (``doc/wallet.md``, "The remote signer").

* ``protocol``  the AMP commands the server's ``signer:`` backend sends, and their refusals
* ``ledger``    what the signer remembers to judge requests: refunds signed, best payments
                seen, money spent per day (no secret)
* ``policy``    the checks, pure functions over the request and the ledger's figures
* ``service``   the AMP responder over a wallet (``SqliteWallet``) and a ledger; every signature
                logged in one line
* ``listen``    the endpoints it listens on: a Unix socket, owner-only; TLS that requires a
                client certificate
"""
