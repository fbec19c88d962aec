"""
twisted-paychan: bitcoinj-compatible micropayment channels (protocol versions 1 and 2) on Twisted.

Layout (data flows one way: bytes -> frame -> message -> state machine -> effects -> adapters):

- ``wire``: framing and the generated protobuf module; nothing else imports protobuf directly.
- ``bitcoin``: keys, signatures, scripts, sighash, transaction builders and the Bitcoin Core
  script check; pure functions.
- ``channel``: sans-IO client/server state machines.
- ``net``: Twisted protocol/factory adapters with Deferred-returning APIs.
- ``chain``: chain, wallet and fee backends (interfaces, in-memory doubles, embedded regtest).
- ``store``: durable channel storage.
"""

__version__ = "0.1.0.dev0"
