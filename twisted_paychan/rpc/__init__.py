"""
Bitcoin Core's JSON-RPC, both ways.

Serving: the embedded regtest node (``chain.embedded``) answers the subset of Bitcoin Core's RPC
that wallets, channel servers and test tools use, with Core's result shapes, error codes and
authentication, so any Bitcoin Core client (``bitcoin-cli``, python-bitcoinlib's proxy, our own
``RpcChain``) can drive it.

Using: ``RpcChain`` is an ``IChain`` over any Bitcoin Core-compatible RPC (a real ``bitcoind`` on
any network, or the server above), and ``RpcFeeEstimator`` an ``IFeeEstimator`` over
``estimatesmartfee``.

Shared:

``errors``       Bitcoin Core's RPC error codes and the exception that carries one
``jsonenc``      JSON with exact amounts (Decimal in, Core's 8-decimal numbers out)
``auth``         the ``.cookie`` file and HTTP basic authentication

Server:

``protocol``     JSON-RPC 1.0/2.0 requests and replies, batches, HTTP statuses (sans-IO)
``params``       positional/named parameters, Core's type errors, hashes
``coreviews``    Core-shaped JSON for blocks, headers, transactions and scripts
``descriptors``  ``addr(...)`` / ``raw(...)`` output descriptors and their checksums
``nodeview``     coin lookups and test-acceptance on ``RegtestNode``'s public API
``methods``      the RPC methods
``server``       the twisted.web resource and ``serve_node`` on an endpoint string
``service``      node + server as one Twisted service (``paychan regtest``, twistd)

Client:

``connection``   a JSON-RPC client over treq (URL or cookie credentials)
``blocks``       raw block parsing for the chain follower
``follower``     following the best chain by polling (reorgs included)
``mempool``      an incrementally updated copy of a node's mempool
``watches``      spend and block watchers and the events they are owed
``client``       ``RpcChain`` and ``RpcFeeEstimator``

``doc/rpc.md`` describes the server, how to point ``RpcChain`` at a real bitcoind, and the CLI.
"""
