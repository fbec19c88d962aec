"""
Crash points for fault-injection tests.

A test that must prove "a crash at this step loses nothing" starts a real server process with
``PAYCHAN_CRASH_AT=<point>`` in its environment; when the server reaches that point it kills
itself with SIGKILL, exactly there: no clean-up, no flush, like a power cut. Without the
variable this is one dictionary lookup per call. The points are named in :data:`POINTS`.
"""

from __future__ import annotations

import os
import signal
from typing import Final

#: Where a server (or, for the ``client-`` ones, a client) can be made to die.
POINTS: Final = frozenset({
    "client-contract-funded",  # the wallet signed the contract; nothing stored or sent
    "client-channel-stored",   # the refund is stored; the contract not sent yet
    "client-change-stored",    # a new c is stored; its UPDATE_PAYMENT not sent
    "contract-broadcast",     # the node accepted the contract; the channel is not stored yet
    "channel-stored",         # stored; CHANNEL_OPEN not sent
    "payment-stored",         # a payment is durable; its PAYMENT_ACK not sent
    "settlement-stored",      # the settlement is durable; not broadcast
    "settlement-broadcast",   # broadcast; CLOSE{settlement} not sent
    "wallet-encrypt-written",   # paychan wallet encrypt: the encrypted copy is synced, not renamed
    "wallet-encrypt-replaced",  # the encrypted copy has replaced the plaintext wallet
})

_ARMED: Final = os.environ.get("PAYCHAN_CRASH_AT")
_countdown = {"n": int(os.environ.get("PAYCHAN_CRASH_AFTER", "1"))}


def crash_point(name: str) -> None:
    """Die here if this process was told to (the N-th time it gets here, N = PAYCHAN_CRASH_AFTER)."""
    if _ARMED is None or _ARMED != name:
        return
    _countdown["n"] -= 1
    if _countdown["n"] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
