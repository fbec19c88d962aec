"""
Bitcoin building blocks for payment channels (PROTOCOL.md §4): keys, signatures, the legacy
sighash, channel scripts, scriptSigs, transaction builders, and the Bitcoin Core script check
that judges every spend. Pure functions: no I/O, no reactor.
"""
