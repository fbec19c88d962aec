"""
Building and signing the wallet's funding transactions.

Layout, fixed so that channels can rely on it: output 0 pays the requested amount to the
requested script, the change output (if any) comes after it, nLockTime is 0.

* **Version 2**, as Bitcoin Core's wallet writes: it costs nothing, leaves BIP68 relative lock
  times possible, and the channel protocol never looks at the funding transaction's version.
* **Final sequence numbers** (0xFFFFFFFF): a channel's refund is signed over the contract's
  txid before the contract is broadcast, so the contract must never be replaced; we do not
  signal BIP125 replaceability.
* **SIGHASH_ALL** on every input: legacy sighash for P2PKH inputs, BIP143 (segwit v0, which
  commits to the spent amount) for P2WPKH inputs, both from python-bitcoinlib's SignatureHash.

The fee is charged on the real signed size: sign, measure, set the change so the fee is what
that size needs at the rate, sign again; signatures vary by a byte, so this repeats until the
fee covers the size (at most a few rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Optional, Sequence

from bitcoin.core import (
    COutPoint,
    CTransaction,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
)
from bitcoin.core.script import (
    SIGHASH_ALL,
    SIGVERSION_BASE,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)

from twisted_paychan.bitcoin.addresses import hash160, p2pkh_script
from twisted_paychan.chain.types import FundedTransaction, Utxo
from twisted_paychan.constants import FINAL_SEQUENCE
from twisted_paychan.wallet.coinselect import dust_threshold, fee_for_weight
from twisted_paychan.wallet.keys import ScriptType, Signer

__all__ = ["FUNDING_TX_VERSION", "SpendableCoin", "build_funding_transaction", "build_sweep_transaction"]

#: See the module docstring for why 2.
FUNDING_TX_VERSION: Final = 2
#: Rounds of sign-measure-adjust before giving up (never reached in practice: the size only
#: moves by a byte per signature, and the fee only ever goes up).
_MAX_FEE_ROUNDS: Final = 8


@dataclass(frozen=True)
class SpendableCoin:
    """A coin with the key and script form needed to spend it."""

    utxo: Utxo
    signer: Signer
    script_type: ScriptType


def _sign(
    coins: Sequence[SpendableCoin], outputs: Sequence[CTxOut], version: int
) -> CTransaction:
    unsigned_inputs = [
        CTxIn(COutPoint(c.utxo.outpoint.txid, c.utxo.outpoint.index), nSequence=FINAL_SEQUENCE)
        for c in coins
    ]
    unsigned = CTransaction(unsigned_inputs, outputs, 0, version)
    inputs = []
    witnesses = []
    for i, coin in enumerate(coins):
        pub = coin.signer.public_key
        if coin.script_type is ScriptType.P2WPKH:
            # BIP143: the script code of a P2WPKH input is the P2PKH script of its key hash.
            script_code = CScript(p2pkh_script(hash160(pub)))
            digest = SignatureHash(
                script_code, unsigned, i, SIGHASH_ALL, coin.utxo.value, SIGVERSION_WITNESS_V0
            )
            sig = coin.signer.sign(digest) + bytes([SIGHASH_ALL])
            inputs.append(unsigned_inputs[i])
            witnesses.append(CTxInWitness(CScriptWitness([sig, pub])))
        else:
            digest = SignatureHash(
                CScript(coin.utxo.script_pubkey), unsigned, i, SIGHASH_ALL, None, SIGVERSION_BASE
            )
            sig = coin.signer.sign(digest) + bytes([SIGHASH_ALL])
            txin = unsigned_inputs[i]
            inputs.append(CTxIn(txin.prevout, CScript([sig, pub]), txin.nSequence))
            witnesses.append(CTxInWitness())
    return CTransaction(inputs, outputs, 0, version, CTxWitness(witnesses))


def build_funding_transaction(
    coins: Sequence[SpendableCoin],
    amount: int,
    target_script: bytes,
    change_script: Optional[bytes],
    fee_rate: int,
) -> FundedTransaction:
    """Sign a transaction spending ``coins``: ``amount`` to ``target_script`` as output 0, and,
    when ``change_script`` is given, the rest minus the fee to it as output 1.

    With change, the fee is the one the signed virtual size needs at ``fee_rate`` (rounded up,
    plus at most the few sat by which a re-signed transaction shrank). Without change, the
    fee is whatever the coins leave over, which must at least cover the signed size; a change
    that would be dust is dropped and left to the fee.
    """
    total_in = sum(c.utxo.value for c in coins)
    out0 = CTxOut(amount, CScript(target_script))
    if change_script is not None:
        fee = 0
        for _ in range(_MAX_FEE_ROUNDS):
            change = total_in - amount - fee
            if change < dust_threshold(change_script):
                return build_funding_transaction(coins, amount, target_script, None, fee_rate)
            tx = _sign(coins, [out0, CTxOut(change, CScript(change_script))], FUNDING_TX_VERSION)
            needed = fee_for_weight(tx.calc_weight(), fee_rate)
            if needed <= fee:
                return _funded(tx, coins, fee, change_index=1)
            fee = needed
        raise AssertionError("funding fee did not settle")  # pragma: no cover
    fee = total_in - amount
    tx = _sign(coins, [out0], FUNDING_TX_VERSION)
    needed = fee_for_weight(tx.calc_weight(), fee_rate)
    if fee < needed:
        raise ValueError(f"coins leave {fee} sat for the fee, the signed size needs {needed}")
    return _funded(tx, coins, fee, change_index=None)


def build_sweep_transaction(
    coins: Sequence[SpendableCoin], target_script: bytes, fee_rate: int
) -> FundedTransaction:
    """Sign a transaction spending every one of ``coins`` into one output to ``target_script``,
    worth their total minus the fee the signed size needs at ``fee_rate`` (same layout and
    signing as a funding transaction, no change). ValueError when that output would be dust."""
    total_in = sum(c.utxo.value for c in coins)
    fee = 0
    for _ in range(_MAX_FEE_ROUNDS):
        value = total_in - fee
        if value < dust_threshold(target_script):
            raise ValueError(f"{total_in} sat leave {value} sat after the fee: dust")
        tx = _sign(coins, [CTxOut(value, CScript(target_script))], FUNDING_TX_VERSION)
        needed = fee_for_weight(tx.calc_weight(), fee_rate)
        if needed <= fee:
            return _funded(tx, coins, fee, change_index=None)
        fee = needed
    raise AssertionError("sweep fee did not settle")  # pragma: no cover


def _funded(
    tx: CTransaction, coins: Sequence[SpendableCoin], fee: int, change_index: Optional[int]
) -> FundedTransaction:
    return FundedTransaction(
        tx=tx.serialize(),
        txid=bytes(tx.GetTxid()),
        fee=fee,
        change_index=change_index,
        spent=tuple(c.utxo.outpoint for c in coins),
    )
