"""
Bitcoin Core's relay policy for outputs: which scripts are witness programs, which are
unspendable, and below what value an output is dust.

One implementation for the three places that need it: the settlement drops a dust payout
(:mod:`twisted_paychan.bitcoin.settlement`), the wallet never creates dust
(:mod:`twisted_paychan.wallet.coinselect`), and both chains refuse a transaction with a dust
output as Core's mempool does (:mod:`twisted_paychan.chain.embedded.rules`).
"""

from __future__ import annotations

from twisted_paychan.bitcoin.transactions import compact_size
from twisted_paychan.constants import DUST_RELAY_TX_FEE, MAX_SCRIPT_SIZE

__all__ = ["is_witness_program", "is_unspendable", "dust_threshold"]

_OP_0 = 0x00
_OP_1 = 0x51
_OP_16 = 0x60
_OP_RETURN = 0x6A

#: Bytes of the input that would spend an output, besides its scriptSig/witness: outpoint 36,
#: scriptSig length 1, sequence 4.
_INPUT_OVERHEAD = 32 + 4 + 1 + 4
#: Core's assumed signature-plus-key for spending it: 107 bytes, a quarter of that (26) when it
#: is witness data.
_SPEND_DATA = 107


def is_witness_program(script_pubkey: bytes) -> bool:
    """Core's ``CScript::IsWitnessProgram``: ``OP_0``..``OP_16`` then one push of 2 to 40 bytes
    that ends the script."""
    s = script_pubkey
    return 4 <= len(s) <= 42 and (s[0] == _OP_0 or _OP_1 <= s[0] <= _OP_16) and s[1] + 2 == len(s)


def is_unspendable(script_pubkey: bytes) -> bool:
    """Core's ``CScript::IsUnspendable``: starts with OP_RETURN, or too long to ever run."""
    return script_pubkey[:1] == bytes((_OP_RETURN,)) or len(script_pubkey) > MAX_SCRIPT_SIZE


def dust_threshold(script_pubkey: bytes, *, exempt_unspendable: bool = True) -> int:
    """Bitcoin Core's ``GetDustThreshold`` at the default dust relay fee
    (:data:`~twisted_paychan.constants.DUST_RELAY_TX_FEE`, 3000 sat/kB).

    The cost of spending the output later: its own serialised size plus 148 bytes for a legacy
    input (67 for a witness program), times 3 sat per byte. P2PKH gives 546, P2SH 540,
    P2WPKH 294, P2WSH and P2TR 330. Unspendable outputs (OP_RETURN, over 10000 bytes) are
    never dust, as in Core; ``exempt_unspendable=False`` prices them like any other script,
    for a caller that refuses to pay a sub-dust amount to any script at all (the wallet).
    """
    script_pubkey = bytes(script_pubkey)
    if exempt_unspendable and is_unspendable(script_pubkey):
        return 0
    size = 8 + len(compact_size(len(script_pubkey))) + len(script_pubkey)
    size += _INPUT_OVERHEAD + (_SPEND_DATA // 4 if is_witness_program(script_pubkey) else _SPEND_DATA)
    return size * DUST_RELAY_TX_FEE // 1000
