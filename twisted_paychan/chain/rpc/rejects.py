"""
What a refused ``sendrawtransaction`` means, from Bitcoin Core's answer.

Core answers a refusal with an RPC error code and a message. The code says who refused
(``-25`` the transaction could not be checked against its inputs, ``-26`` the mempool refused
it, ``-27`` the chain already has it, ``-22`` it does not decode); the message is Core's reject
reason, whose token (:func:`chain.types.reject_kind`) says why. A node that could not be asked
at all (no connection, wrong credentials, an answer that is not JSON-RPC, a node still warming
up) decided nothing about the transaction, and says so with :attr:`RejectKind.UNREACHABLE`,
so a caller never takes a network fault for the transaction's.
"""

from __future__ import annotations

from twisted_paychan.chain.types import BroadcastRejected, RejectKind, reject_kind
from twisted_paychan.rpc.connection import RpcAuthError, RpcConnectionError, RpcProtocolError
from twisted_paychan.rpc.errors import (
    RPC_IN_WARMUP,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED,
    RpcError,
)

#: The code that says a refusal came from no node at all.
NO_ANSWER = 0

#: Failures of the transport, not of the transaction.
UNREACHABLE_ERRORS = (RpcConnectionError, RpcAuthError, RpcProtocolError)


def refused(error: RpcError) -> BroadcastRejected:
    """Core's error answer to ``sendrawtransaction`` as a :class:`BroadcastRejected`, its kind
    decided by the code first and by the reason's token within -25 and -26."""
    if error.code == RPC_VERIFY_ALREADY_IN_CHAIN:
        kind = RejectKind.ALREADY_KNOWN
    elif error.code == RPC_IN_WARMUP:
        kind = RejectKind.UNREACHABLE
    elif error.code in (RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED):
        kind = reject_kind(error.message)
    else:  # -22 decode failed, -8 bad parameter, ...: the transaction as sent is wrong
        kind = RejectKind.INVALID
    return BroadcastRejected(error.message, error.code, kind)


def unreachable(error: Exception) -> BroadcastRejected:
    """A broadcast the node never judged; the reason is the transport's own message."""
    return BroadcastRejected(str(error), NO_ANSWER, RejectKind.UNREACHABLE)
