"""
Twisted adapters around the sans-IO channel machines: channel objects that carry out their
effects through the backends (wallet, chain, store, application) with Deferreds, for use over
any transport, and the TCP protocols built on them.
"""
