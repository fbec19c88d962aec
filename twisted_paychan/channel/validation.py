"""
The receive-side checks of PROTOCOL.md §5–§8 (Appendix A), turning the primitives' typed
errors into the ERROR code the peer must hear.

Every function either returns checked values or raises :class:`RemoteProtocolError` with the
code and close reason the specification gives; where bitcoinj "drops" the connection, the code
is the recommended ``SYNTAX_ERROR`` (or ``BAD_TRANSACTION`` for an undecodable key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from twisted_paychan import constants as C
from twisted_paychan.bitcoin import consensus, keys, payment, refund, signatures
from twisted_paychan.bitcoin.contract import ContractError, check_contract
from twisted_paychan.bitcoin.scripts import ChannelScript, p2pkh_script
from twisted_paychan.bitcoin.transactions import (
    TransactionParseError,
    TransactionSanityError,
    check_transaction_sanity,
    parse_transaction,
    serialize,
)
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.channel.errors import ErrorCode, RemoteProtocolError
from twisted_paychan.wire.received import UpdatePayment

BAD = ErrorCode.BAD_TRANSACTION


def _bad(explanation: str) -> RemoteProtocolError:
    return RemoteProtocolError(BAD, explanation)


# -- keys (§2.6) ------------------------------------------------------------------------------


def client_key(raw: bytes) -> bytes:
    """K_C from PROVIDE_REFUND or PROVIDE_CONTRACT. [Recommended] canonical form and on the
    curve (bitcoinj only needs it to decode, and drops otherwise)."""
    try:
        return keys.check_public_key(bytes(raw))
    except keys.PublicKeyError as e:
        raise _bad(f"client key: {e}") from e


def server_key(raw: bytes) -> bytes:
    """K_S from INITIATE: canonical form (A.2: BAD_TRANSACTION), then a curve point
    ([Recommended] BAD_TRANSACTION where bitcoinj drops)."""
    try:
        return keys.check_public_key(bytes(raw))
    except keys.PublicKeyError as e:
        raise _bad(f"server key: {e}") from e


# -- transactions -----------------------------------------------------------------------------


def _parse(raw: bytes, what: str) -> Any:
    try:
        tx = parse_transaction(bytes(raw))
    except TransactionParseError as e:
        raise _bad(f"{what} does not parse: {e}") from e
    try:
        check_transaction_sanity(tx)
    except TransactionSanityError as e:
        raise _bad(f"{what} fails basic checks: {e}") from e
    return tx


@dataclass(frozen=True)
class CheckedRefund:
    outpoint: tuple[bytes, int]
    #: The single output, serialized (value + script), kept for information (§11.2).
    output: bytes


def v1_refund(raw: bytes, expiry: int) -> CheckedRefund:
    """§5 step 5 checks 2–7 on the client's unsigned refund."""
    tx = _parse(raw, "refund")
    if len(tx.vin) != 1:
        raise _bad(f"refund has {len(tx.vin)} inputs, needs exactly 1")
    if tx.vin[0].nSequence == C.FINAL_SEQUENCE:
        raise _bad("refund input is final (sequence 0xffffffff): its lock time would not count")
    if tx.nLockTime < expiry:
        raise _bad(f"refund lock time {tx.nLockTime} is before the expiry {expiry}")
    if len(tx.vout) != 1:
        raise _bad(f"refund has {len(tx.vout)} outputs, needs exactly 1")
    prevout = tx.vin[0].prevout
    return CheckedRefund((bytes(prevout.hash), prevout.n), tx.vout[0].serialize())


def sign_v1_refund(raw: bytes, client_public_key: bytes, signer: Any) -> bytes:
    """The server's NONE|ANYONECANPAY signature on the v1 refund (§4.7)."""
    channel = ChannelScript(1, client_public_key, signer.public_key)
    return refund.server_refund_signature(signer, parse_transaction(bytes(raw)), channel)


@dataclass(frozen=True)
class CheckedContract:
    tx: bytes
    txid: bytes
    value: int


def contract(raw: bytes, channel: ChannelScript, min_value: int) -> CheckedContract:
    """§5 step 7 / §6 step 5 checks, plus [Recommended] ``V >= min_accepted_channel_size``."""
    tx = _parse(raw, "contract")
    try:
        value = check_contract(tx, channel)
    except ContractError as e:
        raise _bad(str(e)) from e
    if value > C.MAX_MONEY:
        raise _bad(f"contract value {value} out of range")
    if value < min_value:
        raise _bad(f"channel value {value} is below the minimum {min_value}")
    raw = bytes(raw)
    return CheckedContract(raw, txid_of(tx), value)


@dataclass(frozen=True)
class CheckedPayment:
    best_value: int
    client_change: int
    signature: bytes
    info: Optional[bytes]


def payment_update(
    update: UpdatePayment,
    value: int,
    best_value: int,
    contract_txid: bytes,
    channel: ChannelScript,
) -> CheckedPayment:
    """§7.3 checks 1–4, 6 and 7 (check 5, the contract's standing, is the machine's)."""
    c = update.client_change_value
    if c > C.MAX_MONEY:
        raise _bad(f"client_change_value {c} out of range")
    new_best = value - c
    if new_best < 0:
        raise _bad(f"client_change_value {c} exceeds the channel value {value}")
    if new_best < best_value:
        raise _bad(f"payment would lower the server's value from {best_value} to {new_best}")
    if c != 0 and c < C.P2PKH_DUST_LIMIT:
        raise _bad(f"client change {c} is dust")
    signature = bytes(update.signature)
    try:
        payment.verify_payment_signature(channel, contract_txid, c, signature)
    except signatures.PeerSignatureError as e:
        # [Recommended] BAD_TRANSACTION for every signature failure, the empty one included
        # (bitcoinj answers an empty signature in UPDATE_PAYMENT with SYNTAX_ERROR, §4.2).
        raise _bad(f"payment signature: {e}") from e
    return CheckedPayment(new_best, c, signature, update.info)


# -- client side ------------------------------------------------------------------------------


def v1_refund_signature(
    signature: bytes, unsigned_refund: bytes, channel: ChannelScript, signer: Any
) -> bytes:
    """§5 step 6: check the server's 0x82 signature, add ours (ALL), and have Bitcoin Core run
    the complete refund against the contract output. Returns the fully signed refund."""
    tx = parse_transaction(unsigned_refund)
    try:
        refund.verify_server_refund_signature(tx, channel, bytes(signature))
    except signatures.PeerSignatureError as e:
        raise _bad(f"refund signature: {e}") from e
    ours = refund.client_refund_signature(signer, tx, channel)
    signed = serialize(refund.with_refund_script_sig(tx, channel, ours, bytes(signature)))
    if not consensus.verify_input(signed, 0, channel.script_pubkey, 0):
        raise _bad("the signed refund does not spend the channel output")
    return signed


def settlement_parses(raw: bytes) -> None:
    """§8.3 step 1: a settlement in the server's CLOSE that does not parse is
    ``BAD_TRANSACTION``; one that parses but is invalid is silently ignored (step 3)."""
    try:
        parse_transaction(bytes(raw))
    except TransactionParseError as e:
        raise _bad(f"settlement does not parse: {e}") from e


def settlement_spends_contract(raw: bytes, contract_txid: bytes, channel: ChannelScript, value: int) -> bool:
    """§8.3: a settlement counts if it parses, passes the sanity checks and its input 0 validly
    spends contract output 0 (Bitcoin Core's interpreter decides). Amounts are not checked."""
    try:
        tx = parse_transaction(bytes(raw))
        check_transaction_sanity(tx)
    except (TransactionParseError, TransactionSanityError):
        return False
    prevout = tx.vin[0].prevout
    if (bytes(prevout.hash), prevout.n) != (contract_txid, 0):
        return False
    try:
        return consensus.verify_input(serialize(tx, include_witness=True), 0, channel.script_pubkey, value)
    except consensus.JudgeArgumentError:
        return False


def settlement_pays_change(raw: bytes, client_key: bytes, client_change: int) -> bool:
    """Whether a transaction spending the contract pays the client at least its change ``c``
    to P2PKH(K_C) as output 0 (§4.9). Any payment the client signed leaves it at least the
    current ``c`` (``c`` only ever falls), so a settlement that does not is not one of ours."""
    if client_change == 0:
        return True
    try:
        tx = parse_transaction(bytes(raw))
    except TransactionParseError:
        return False
    if not tx.vout:
        return False
    out = tx.vout[0]
    return out.nValue >= client_change and bytes(out.scriptPubKey) == p2pkh_script(client_key)
