"""
Signed P2PKH / P2WPKH spends for the chain tests, built directly with coincurve and
python-bitcoinlib (the project's transaction builders live elsewhere and are not a dependency
of the chain tests).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

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
from bitcoin.core.script import (
    OP_0,
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcoin.core.serialize import Hash160

from twisted_paychan.chain.types import OutPoint


@dataclass(frozen=True)
class Key:
    private: coincurve.PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> "Key":
        return cls(coincurve.PrivateKey(hashlib.sha256(seed).digest()))

    @property
    def pub(self) -> bytes:
        return self.private.public_key.format()

    @property
    def p2pkh(self) -> bytes:
        return bytes(CScript([OP_DUP, OP_HASH160, Hash160(self.pub), OP_EQUALVERIFY, OP_CHECKSIG]))

    @property
    def p2wpkh(self) -> bytes:
        return bytes(CScript([OP_0, Hash160(self.pub)]))

    def sign(self, digest: bytes) -> bytes:
        return self.private.sign(digest, hasher=None) + bytes([SIGHASH_ALL])


#: The witness script OP_TRUE and its P2WSH output: the embedded node's default coinbase payee.
OP_TRUE_SCRIPT = b"\x51"
ANYONE_CAN_SPEND = b"\x00\x20" + hashlib.sha256(OP_TRUE_SCRIPT).digest()


@dataclass(frozen=True)
class Coin:
    outpoint: OutPoint
    value: int
    #: None: the output pays ANYONE_CAN_SPEND and is spent with the witness [OP_TRUE].
    key: Optional[Key]
    segwit: bool = False


def spend(
    coins: Sequence[Coin],
    outputs: Sequence[tuple[bytes, int]],
    *,
    lock_time: int = 0,
    sequence: int = 0xFFFFFFFF,
    version: int = 1,
    corrupt: bool = False,
) -> bytes:
    """A transaction spending ``coins`` (each signed SIGHASH_ALL by its key) to ``outputs``.

    ``corrupt`` flips a bit of the first signature's digest, making it invalid.
    """
    tx = CMutableTransaction(
        [CMutableTxIn(COutPoint(c.outpoint.txid, c.outpoint.index), nSequence=sequence) for c in coins],
        [CMutableTxOut(value, CScript(script)) for script, value in outputs],
        nLockTime=lock_time,
        nVersion=version,
    )
    witnesses = []
    for index, coin in enumerate(coins):
        if coin.key is None:
            witnesses.append(CTxInWitness(CScriptWitness([OP_TRUE_SCRIPT])))
            continue
        if coin.segwit:
            code = CScript([OP_DUP, OP_HASH160, Hash160(coin.key.pub), OP_EQUALVERIFY, OP_CHECKSIG])
            digest = SignatureHash(code, tx, index, SIGHASH_ALL, amount=coin.value, sigversion=SIGVERSION_WITNESS_V0)
        else:
            digest = SignatureHash(CScript(coin.key.p2pkh), tx, index, SIGHASH_ALL)
        if corrupt and index == 0:
            digest = bytes([digest[0] ^ 1]) + digest[1:]
        sig = coin.key.sign(digest)
        if coin.segwit:
            witnesses.append(CTxInWitness(CScriptWitness([sig, coin.key.pub])))
        else:
            tx.vin[index].scriptSig = CScript([sig, coin.key.pub])
            witnesses.append(CTxInWitness())
    if any(c.segwit or c.key is None for c in coins):
        tx.wit = CTxWitness(witnesses)
    return CTransaction.from_tx(tx).serialize()


def txid_of(raw: bytes) -> bytes:
    return CTransaction.deserialize(raw).GetTxid()


def fee_output(coin: Coin, script: bytes, fee: int = 1_000) -> list[tuple[bytes, int]]:
    return [(script, coin.value - fee)]


def output_coin(raw: bytes, key: Optional[Key], index: int = 0) -> Coin:
    """Output ``index`` of ``raw`` as a coin spendable by ``key`` (None: anyone-can-spend)."""
    tx = CTransaction.deserialize(raw)
    out = tx.vout[index]
    segwit = key is not None and bytes(out.scriptPubKey) == key.p2wpkh
    return Coin(OutPoint(tx.GetTxid(), index), out.nValue, key, segwit)
