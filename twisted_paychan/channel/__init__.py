"""
Sans-IO payment-channel state machines (PROTOCOL.md §3–§9): they take a decoded message, a
local command, or the result of an effect they asked for, and return what to do. No sockets,
no reactor, no database: adapters in ``net`` do the I/O.
"""
