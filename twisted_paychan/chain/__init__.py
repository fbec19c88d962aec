"""
Chain, wallet and fee backends: one zope interface per role (``interfaces``), an in-memory
double of each for tests and embedding, the embedded regtest node on Bitcoin Core's consensus
engine, and a Bitcoin Core JSON-RPC client.
"""
