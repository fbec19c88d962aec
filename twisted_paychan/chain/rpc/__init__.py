"""
The bitcoind chain backend: ``RpcChain`` is an ``IChain`` over any Bitcoin Core-compatible
JSON-RPC (a real ``bitcoind`` on any network, or the embedded node's server in
``chain.embedded.rpc``), and ``RpcFeeEstimator`` an ``IFeeEstimator`` over ``estimatesmartfee``.
The JSON-RPC transport itself is :mod:`twisted_paychan.rpc`.

``chain``      ``RpcChain`` and ``RpcFeeEstimator``
``blocks``     raw block parsing for the chain follower
``follower``   following the best chain by polling (reorgs included)
``mempool``    an incrementally updated copy of a node's mempool
``watches``    spend and block watchers and the events they are owed
"""
