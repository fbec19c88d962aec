"""
Chain, wallet and fee backends: one zope interface per role (``interfaces``), an in-memory
double of each for tests and embedding, the embedded regtest node on Bitcoin Core's consensus
engine (``embedded``, with its JSON-RPC server in ``embedded.rpc``), and ``RpcChain`` over a
bitcoind (``rpc``).
"""
