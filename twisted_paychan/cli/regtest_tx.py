"""
The transaction ``paychan regtest-fund`` sends: coinbase outputs of a throwaway key, spent to
the requested address with change back to the key.

Built with python-bitcoinlib (BIP143 ``SignatureHash`` for the P2WPKH inputs), signed with
coincurve (RFC 6979, always low S), and every input judged by Bitcoin Core's interpreter
(``bitcoin.consensus.verify_input``) before anyone sees it. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Sequence

import coincurve
from bitcoin.core import (
    COutPoint,
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    CTransaction,
    CTxInWitness,
    CTxWitness,
)
from bitcoin.core.script import SIGHASH_ALL, SIGVERSION_WITNESS_V0, CScript, CScriptWitness, SignatureHash

from twisted_paychan.bitcoin import consensus, der
from twisted_paychan.bitcoin.addresses import p2wpkh_script
from twisted_paychan.bitcoin.policy import dust_threshold
from twisted_paychan.bitcoin.scripts import hash160, p2pkh_script
from twisted_paychan.chain.types import OutPoint

#: Virtual size of a P2WPKH input (41 bytes + a 108-byte witness at a quarter), rounded up.
P2WPKH_INPUT_VSIZE: Final = 69
#: Version, counts, lock time and segwit marker.
TX_OVERHEAD_VSIZE: Final = 11


class SigningFailed(RuntimeError):
    """The transaction we signed does not pass Bitcoin Core's interpreter (a bug)."""


@dataclass(frozen=True)
class KeyCoin:
    outpoint: OutPoint
    value: int


@dataclass(frozen=True)
class FundingTx:
    raw: bytes
    txid: bytes
    fee: int
    #: Index of the output paying the requested script (always 0).
    vout: int
    change: int


class ThrowawayKey:
    """A fresh key whose P2WPKH output receives the mined coins."""

    def __init__(self, private: coincurve.PrivateKey | None = None) -> None:
        self.private = private or coincurve.PrivateKey()
        self.public = self.private.public_key.format()
        self.script_pubkey = p2wpkh_script(hash160(self.public))

    def sign(self, digest: bytes) -> bytes:
        sig = self.private.sign(digest, hasher=None)
        if not der.parse_signature(sig + bytes([SIGHASH_ALL])).is_low_s():
            raise SigningFailed("coincurve returned a high-S signature")
        return sig + bytes([SIGHASH_ALL])


def output_vsize(script_pubkey: bytes) -> int:
    return 8 + 1 + len(script_pubkey)


def estimate_fee(inputs: int, scripts: Sequence[bytes], fee_rate: int) -> int:
    vsize = TX_OVERHEAD_VSIZE + inputs * P2WPKH_INPUT_VSIZE + sum(output_vsize(s) for s in scripts)
    return -(-vsize * fee_rate // 1000)


def build_funding_tx(key: ThrowawayKey, coins: Sequence[KeyCoin], script_pubkey: bytes, amount: int, fee_rate: int) -> FundingTx:
    """Pay ``amount`` to ``script_pubkey`` (output 0) from ``coins``, change to ``key``."""
    total = sum(c.value for c in coins)
    fee = estimate_fee(len(coins), [script_pubkey, key.script_pubkey], fee_rate)
    change = total - amount - fee
    if change < 0:
        raise ValueError(f"{total} sat of coins cannot pay {amount} sat plus a {fee} sat fee")
    outputs = [CMutableTxOut(amount, CScript(script_pubkey))]
    if change >= dust_threshold(key.script_pubkey):
        outputs.append(CMutableTxOut(change, CScript(key.script_pubkey)))
    else:
        fee += change
        change = 0
    tx = CMutableTransaction(
        [CMutableTxIn(COutPoint(c.outpoint.txid, c.outpoint.index)) for c in coins], outputs, nLockTime=0, nVersion=2
    )
    script_code = CScript(p2pkh_script(key.public))
    witnesses = []
    for index, coin in enumerate(coins):
        digest = SignatureHash(script_code, tx, index, SIGHASH_ALL, amount=coin.value, sigversion=SIGVERSION_WITNESS_V0)
        witnesses.append(CTxInWitness(CScriptWitness([key.sign(digest), key.public])))
    tx.wit = CTxWitness(witnesses)
    final = CTransaction.from_tx(tx)
    raw = final.serialize()
    for index, coin in enumerate(coins):
        if not consensus.verify_input(raw, index, key.script_pubkey, coin.value):
            raise SigningFailed(f"input {index} of the funding transaction fails Bitcoin Core's interpreter")
    return FundingTx(raw, final.GetTxid(), fee, 0, change)
