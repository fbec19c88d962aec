"""
Durable channel storage (PROTOCOL.md §11): the records each side keeps per channel, an
interface for stores, an in-memory double and the SQLite implementation with group commit.

The rule every store keeps: a Deferred returned by a write fires only once the data is
durable. The channel code waits for it before it acknowledges a payment (server) or lets a
contract or payment leave (client).
"""
