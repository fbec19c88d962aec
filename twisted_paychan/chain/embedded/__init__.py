"""
The embedded regtest node: the project's default chain, running Bitcoin Core's consensus
engine (libbitcoinkernel via py-bitcoinkernel) in-process on a private data directory.

The kernel validates and stores blocks but has no mempool, no miner, no UTXO lookup and no
transaction index. This package adds them, each in its own module:

``rules``      what ``sendrawtransaction`` checks (shared with ``chain.memory.MemoryChain``)
``datadir``    exclusive ownership of a data directory (an advisory lock file)
``kernel``     the ChainstateManager, its callbacks and log, and the block-acceptance verdict
``index``      UTXO and transaction indexes kept from connected/disconnected blocks
``miner``      valid regtest blocks built in Python (BIP34 coinbase, witness commitment)
``mempool``    accepted transactions, in dependency order
``node``       the node: all of the above behind one object, plus optional auto-mining
``chain``      ``EmbeddedChain``, the IChain on top of the node
``rpc``        the node's JSON-RPC server, with Bitcoin Core's methods (a package of its own)

Import what you need from ``node`` and ``chain``; this module imports nothing, so
``rules`` can be used without loading the kernel's index machinery.
"""
