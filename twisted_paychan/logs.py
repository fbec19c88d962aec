"""
Per-message debug logging, off unless asked for.

twistd writes every log event it is given, debug included (it has no level option), so the
lines that would come once per payment or once per RPC request are not even emitted unless
``verbose`` is set (``twistd paychan --verbose``, ``paychan regtest -v``): formatting and writing
them cost more than the payment itself.
"""

verbose = False


def set_verbose(on: bool = True) -> None:
    global verbose
    verbose = on
