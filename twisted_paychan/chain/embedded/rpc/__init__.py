"""
The embedded regtest node's JSON-RPC server: the subset of Bitcoin Core's RPC that wallets,
channel servers and test tools use, with Core's result shapes, error codes and authentication,
so any Bitcoin Core client (``bitcoin-cli``, python-bitcoinlib's proxy, our own ``RpcChain``)
can drive the node. The JSON-RPC transport rules are :mod:`twisted_paychan.rpc`.

``params``       positional/named parameters, Core's type errors, hashes
``coreviews``    Core-shaped JSON for blocks, headers, transactions and scripts
``nodeview``     coin lookups and test-acceptance on ``RegtestNode``'s public API
``methods``      the RPC methods
``server``       the twisted.web resource and ``serve_node`` on an endpoint string
``service``      node + server as one Twisted service (``paychan regtest``, twistd)
"""
