"""
Bitcoin Core's JSON-RPC over HTTP, the transport both of our ends share.

Two packages speak it: ``chain.rpc`` (``RpcChain``, an ``IChain`` over any Bitcoin
Core-compatible node) calls it, and ``chain.embedded.rpc`` (the embedded regtest node's server)
answers it. What they must agree on lives here once, so a client and a server written against
the same rules cannot drift apart: the error codes, the amount encoding, the cookie, and the
request/reply rules of each side.

``errors``       Bitcoin Core's RPC error codes and the exception that carries one
``jsonenc``      JSON with exact amounts (Decimal in, Core's 8-decimal numbers out)
``auth``         the ``.cookie`` file and HTTP basic authentication
``protocol``     JSON-RPC 1.0/2.0 requests and replies, batches, HTTP statuses, as a server
                 answers them (sans-IO)
``connection``   a JSON-RPC client over treq (URL or cookie credentials)

``doc/rpc.md`` describes the server, how to point ``RpcChain`` at a real bitcoind, and the CLI.
"""
