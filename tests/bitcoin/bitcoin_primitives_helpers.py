"""Shared builders for the tests of ``twisted_paychan.bitcoin``: fixed keys and channels, a
contract funded from a (fake) coin, and small tx mutators for the negative twins."""

from __future__ import annotations

import hashlib

from bitcoin.core import CScript

from twisted_paychan.bitcoin import transactions as tx_mod
from twisted_paychan.bitcoin.contract import contract_output
from twisted_paychan.bitcoin.der import SECP256K1_ORDER, parse_signature
from twisted_paychan.bitcoin.keys import KeySigner
from twisted_paychan.bitcoin.scripts import ChannelScript, p2pkh_script, push_data
from twisted_paychan.bitcoin.sighash import signature_hash
from twisted_paychan.bitcoin.signatures import sign
from twisted_paychan.bitcoin.txid import txid
from twisted_paychan.constants import SIGHASH_ALL

E = 1_800_000_000
CHANNEL_VALUE = 1_000_000


def signer(label: str) -> KeySigner:
    return KeySigner(hashlib.sha256(label.encode()).digest())


CLIENT = signer("client channel key")
SERVER = signer("server channel key")
FUNDER = signer("client funding key")
PAYOUT_SCRIPT = p2pkh_script(signer("server payout key").public_key)


def channel(version: int, client: KeySigner = CLIENT, server: KeySigner = SERVER) -> ChannelScript:
    return ChannelScript(version, client.public_key, server.public_key, E)


def funding_tx(value: int = 2 * CHANNEL_VALUE) -> tx_mod.Transaction:
    """A coin for FUNDER, from a made-up previous transaction (its input is never checked)."""
    return tx_mod.make_transaction(
        [tx_mod.tx_input(b"\x11" * 32, 0, 0xFFFFFFFF, b"\x51")],
        [tx_mod.tx_output(value, p2pkh_script(FUNDER.public_key))],
    )


def contract_tx(ch: ChannelScript, value: int = CHANNEL_VALUE) -> tuple[tx_mod.Transaction, tx_mod.Transaction]:
    """(funding, contract): the contract spends funding:0 with a signed P2PKH input, output 0
    locks ``value`` in the channel, output 1 is change back to FUNDER."""
    funding = funding_tx()
    change = tx_mod.tx_output(funding.vout[0].nValue - value - 500, p2pkh_script(FUNDER.public_key))
    outputs = [contract_output(ch, value), change]
    unsigned = tx_mod.make_transaction([tx_mod.tx_input(txid(funding), 0, 0xFFFFFFFF)], outputs)
    digest = signature_hash(unsigned, 0, p2pkh_script(FUNDER.public_key), SIGHASH_ALL)
    script_sig = push_data(sign(FUNDER, digest, SIGHASH_ALL)) + push_data(FUNDER.public_key)
    contract = tx_mod.make_transaction([tx_mod.tx_input(txid(funding), 0, 0xFFFFFFFF, script_sig)], outputs)
    return funding, contract


def replace_script_sig(tx: tx_mod.Transaction, script_sig: bytes, index: int = 0) -> tx_mod.Transaction:
    vin = list(tx.vin)
    old = vin[index]
    vin[index] = tx_mod.tx_input(bytes(old.prevout.hash), old.prevout.n, old.nSequence, script_sig)
    return tx_mod.make_transaction(vin, list(tx.vout), tx.nLockTime, tx.nVersion)


def replace_output(tx: tx_mod.Transaction, index: int, value: int, script: bytes | None = None) -> tx_mod.Transaction:
    vout = list(tx.vout)
    vout[index] = tx_mod.tx_output(value, bytes(vout[index].scriptPubKey) if script is None else script)
    return tx_mod.make_transaction(list(tx.vin), vout, tx.nLockTime, tx.nVersion)


def script_pushes(script_sig: bytes) -> list[bytes]:
    return [bytes(data) if data is not None else bytes((op,)) for op, data, _ in CScript(script_sig).raw_iter()]


def high_s(signature: bytes) -> bytes:
    """The same signature with S replaced by n - S: still valid ECDSA, but high S."""
    parsed = parse_signature(signature)
    return type(parsed)(parsed.r, SECP256K1_ORDER - parsed.s, parsed.sighash).to_bytes()
