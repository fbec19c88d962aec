"""
Which coins pay for a transaction, and whether it gets a change output.

Pure and deterministic: the same coins, amount and fee rate always give the same selection, so
a test (or a person reading a log) can predict what the wallet spent.

Sizes are counted in weight units (BIP141) and fees charged on the virtual size, as Bitcoin Core
does: a fee rate of R sat/kB means R sat per 1000 virtual bytes. The weights here are upper
bounds (a signature counted at its longest, 72 bytes with the sighash byte), so a selection
always covers the fee of the signed transaction; :mod:`twisted_paychan.wallet.txbuild` then
charges the fee of the real signed size.

The strategy has two steps:

1. *Changeless search* (a small branch and bound): look for a set of coins whose value covers
   the amount and the fee with an excess too small to be worth a change output (below the cost
   of the change output plus its dust limit). The excess goes to the fee.
2. *Largest first*: otherwise add the largest coins until the amount, the fee and a change
   output that is not dust are covered.

Coins whose value would not even pay for their own input at this rate are never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Final, Optional, Sequence

from twisted_paychan.bitcoin import policy
from twisted_paychan.chain.interfaces import InsufficientFunds
from twisted_paychan.chain.types import Utxo
from twisted_paychan.constants import DUST_RELAY_TX_FEE

__all__ = [
    "Candidate",
    "Selection",
    "DUST_RELAY_FEE",
    "P2PKH_INPUT_WEIGHT",
    "P2WPKH_INPUT_WEIGHT",
    "dust_threshold",
    "output_weight",
    "transaction_weight",
    "fee_for_weight",
    "select_coins",
]

#: Bitcoin Core's default -dustrelayfee in sat/kB (constants.DUST_RELAY_TX_FEE), under the name
#: this module has exported: an output is dust when spending it would cost more than its value
#: at this rate (546 sat for P2PKH, 294 for P2WPKH, 540 for P2SH).
DUST_RELAY_FEE: Final = DUST_RELAY_TX_FEE
#: Weight of a P2PKH input, signature at its longest: 32 txid + 4 index + 1 script length
#: + 107 scriptSig (push of 72-byte signature, push of 33-byte key) + 4 sequence, times 4.
P2PKH_INPUT_WEIGHT: Final = (32 + 4 + 1 + 107 + 4) * 4
#: Weight of a P2WPKH input: 41 non-witness bytes times 4, plus the witness (item count,
#: 72-byte signature, 33-byte key, each with its length byte).
P2WPKH_INPUT_WEIGHT: Final = (32 + 4 + 1 + 4) * 4 + (1 + 1 + 72 + 1 + 33)
#: A step budget for the changeless search; past it, largest-first decides.
_BNB_MAX_STEPS: Final = 100_000
#: The changeless search looks at this many of the largest coins (it recurses once per coin).
_BNB_MAX_COINS: Final = 200


def _varint_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5 if n <= 0xFFFFFFFF else 9


def output_weight(script_pubkey: bytes) -> int:
    """Weight of an output paying to ``script_pubkey`` (8-byte value, script with length)."""
    return (8 + _varint_len(len(script_pubkey)) + len(script_pubkey)) * 4


def dust_threshold(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust limit for an output to this script (``GetDustThreshold``): the fee,
    at :data:`DUST_RELAY_FEE`, of the output plus a typical input spending it.

    Unlike Core, an unspendable script (OP_RETURN) is not exempt: the wallet pays no script an
    amount below what spending such an output would cost."""
    return policy.dust_threshold(script_pubkey, exempt_unspendable=False)


def fee_for_weight(weight: int, fee_rate: int) -> int:
    """The fee, rounded up, of ``weight`` weight units at ``fee_rate`` sat per 1000 vbytes."""
    vsize = -(-weight // 4)
    return -(-fee_rate * vsize // 1000)


@dataclass(frozen=True)
class Candidate:
    """A coin the wallet may spend and the (upper bound) weight of the input spending it."""

    utxo: Utxo
    input_weight: int
    #: True when the input carries a witness (P2WPKH), which makes the whole tx a segwit tx.
    witness: bool


def transaction_weight(inputs: Sequence[Candidate], output_scripts: Sequence[bytes]) -> int:
    """Upper-bound weight of a version/locktime transaction with these inputs and outputs."""
    weight = (4 + 4 + _varint_len(len(inputs)) + _varint_len(len(output_scripts))) * 4
    weight += sum(c.input_weight for c in inputs)
    weight += sum(output_weight(s) for s in output_scripts)
    if any(c.witness for c in inputs):
        # Marker and flag bytes, and an empty witness (one zero byte) for each legacy input.
        weight += 2 + sum(1 for c in inputs if not c.witness)
    return weight


@dataclass(frozen=True)
class Selection:
    coins: tuple[Candidate, ...]
    #: Whether the transaction gets a change output (its value is decided after signing).
    change: bool
    #: The fee for the upper-bound weight; the real fee is computed from the signed size.
    fee_estimate: int


def select_coins(
    candidates: Sequence[Candidate],
    amount: int,
    target_script: bytes,
    change_script: bytes,
    fee_rate: int,
) -> Selection:
    """Pick coins paying ``amount`` to ``target_script`` at ``fee_rate`` sat/kB.

    Raises :class:`InsufficientFunds` with the amount plus the fee of spending every usable
    coin as ``needed`` and the value of all candidates as ``available``.
    """
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    available = sum(c.utxo.value for c in candidates)

    def fee_without_change(coins: Sequence[Candidate]) -> int:
        return fee_for_weight(transaction_weight(coins, [target_script]), fee_rate)

    def fee_with_change(coins: Sequence[Candidate]) -> int:
        return fee_for_weight(transaction_weight(coins, [target_script, change_script]), fee_rate)

    change_dust = dust_threshold(change_script)
    # Below this excess a change output would be dust or cost more than it returns.
    waste_limit = fee_for_weight(output_weight(change_script), fee_rate) + change_dust

    # Largest value first; ties broken by outpoint so the order never depends on the input order.
    usable = sorted(
        (c for c in candidates if c.utxo.value > fee_for_weight(c.input_weight, fee_rate)),
        key=lambda c: (-c.utxo.value, c.utxo.outpoint),
    )

    found = _changeless_search(usable[:_BNB_MAX_COINS], amount, fee_rate, waste_limit, fee_without_change)
    if found is not None:
        return Selection(found, change=False, fee_estimate=fee_without_change(found))

    chosen: list[Candidate] = []
    total = 0
    for c in usable:
        chosen.append(c)
        total += c.utxo.value
        excess = total - amount - fee_without_change(chosen)
        if excess < 0:
            continue
        if excess < waste_limit or total - amount - fee_with_change(chosen) < change_dust:
            return Selection(tuple(chosen), change=False, fee_estimate=total - amount)
        return Selection(tuple(chosen), change=True, fee_estimate=fee_with_change(chosen))
    raise InsufficientFunds(needed=amount + fee_without_change(usable), available=available)


def _changeless_search(
    usable: Sequence[Candidate],
    amount: int,
    fee_rate: int,
    waste_limit: int,
    fee_without_change: Callable[[Sequence[Candidate]], int],
) -> Optional[tuple[Candidate, ...]]:
    """Depth-first include/exclude search over ``usable`` (largest first) for a set whose
    excess over amount + fee is in [0, waste_limit). Effective values (value minus the input's
    own fee) steer the search; a hit is confirmed with the exact weight of the whole set."""
    effective = [c.utxo.value - fee_for_weight(c.input_weight, fee_rate) for c in usable]
    # What the rest of the transaction costs, with no inputs; rounding makes this approximate,
    # which is why every hit is checked exactly.
    base_fee = fee_without_change([])
    target = amount + base_fee
    remaining = [0] * (len(usable) + 1)
    for i in range(len(usable) - 1, -1, -1):
        remaining[i] = remaining[i + 1] + effective[i]

    steps = 0
    chosen: list[int] = []

    def search(i: int, value: int) -> Optional[tuple[Candidate, ...]]:
        nonlocal steps
        steps += 1
        if steps > _BNB_MAX_STEPS or value > target + waste_limit:
            return None
        if value >= target:
            # Adding coins only adds excess, so this branch ends here either way.
            coins = tuple(usable[j] for j in chosen)
            excess = sum(c.utxo.value for c in coins) - amount - fee_without_change(coins)
            return coins if 0 <= excess < waste_limit else None
        if i == len(usable) or value + remaining[i] < target:
            return None
        chosen.append(i)
        hit = search(i + 1, value + effective[i])
        chosen.pop()
        if hit is not None:
            return hit
        return search(i + 1, value)

    return search(0, 0)
