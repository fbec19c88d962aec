"""
The settlement: the server completes the latest payment and takes its share ``b`` minus the fee
(PROTOCOL.md §4.9, §8.2 step 4, §13 items 6, 12, 13).

Layout: version 1; input 0 = contract:0, sequence ``0xFFFFFFFF``; output 0 = ``c`` to
P2PKH(``K_C``) if ``c > 0``; then the server's payout ``b - fee``; nLockTime 0. The server signs
ALL with ``K_S`` and assembles the scriptSig with the client's latest payment signature.

**Fee: our rule (the spec's recommendation), not bitcoinj's.** ``fee = floor(r * S / 1000)``
with ``r = max(fee_rate, 1000)`` sat/kB and ``S`` the *real* size of the final signed
settlement. The server's signature is over the payout amount, so its length (71 or 72 bytes,
rarely less) is known only after signing: :func:`build_settlement` assumes the longest low-S
signature, signs, and re-prices with the real length until the fee it paid is the fee the real
size needs. About one time in four no such fixed point exists (priced for 71 bytes the signature
comes out 72, priced for 72 it comes out 71); we then keep the version priced one signature byte
above its real size (rarely two), never one below: paying less than the real size at the
1000 sat/kB floor would fall under Bitcoin Core's minimum relay fee. The payout is left out
when it would be dust for its script (546 P2PKH, 540 P2SH, Bitcoin Core's rule at 3000 sat/kB
otherwise), and then all of ``b`` goes to the fee. If ``b``
cannot pay even the fee of a settlement without payout, :class:`SettlementUnaffordable` is
raised and nothing is built: the caller must keep the channel (spec §13 item 6), not forget it
as bitcoinj does.

bitcoinj instead prices a copy of the transaction with a provisional NONE|ANYONECANPAY server
signature whose input was copied wrongly, which adds ``40 + varint_size(n)`` bytes (41 for v1
with compressed keys, 43 for v2; §13 item 12). :func:`bitcoinj_settlement_fee_estimate`
reproduces that, only so the conformance tests can show we understand the recorded fees. We
never use it to build anything; the client does not check the fee, so either rule is
wire-compatible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from twisted_paychan.bitcoin import consensus
from twisted_paychan.bitcoin.policy import dust_threshold
from twisted_paychan.bitcoin.script_sigs import cooperative_script_sig
from twisted_paychan.bitcoin.scripts import ChannelScript
from twisted_paychan.bitcoin.sighash import payment_sighash_type, signature_hash
from twisted_paychan.bitcoin.signatures import sign
from twisted_paychan.bitcoin.transactions import (
    Transaction,
    compact_size,
    make_transaction,
    serialize,
    tx_input,
    tx_output,
)
from twisted_paychan.chain.interfaces import ISigner
from twisted_paychan.constants import (
    FEE_RATE_FLOOR,
    FINAL_SEQUENCE,
    MAX_MONEY,
    SIGHASH_ALL,
    SIGHASH_NONE_ANYONECANPAY,
    TX_VERSION,
)

__all__ = [
    "Settlement",
    "SettlementUnaffordable",
    "SettlementRejected",
    "dust_threshold",  # from bitcoin.policy, re-exported: callers import it from here
    "fee_for_size",
    "build_settlement",
    "bitcoinj_settlement_fee_estimate",
]

#: Longest strict-DER low-S signature plus its sighash byte: 33-byte R, 32-byte S.
MAX_LOW_S_SIGNATURE_SIZE = 72


class SettlementUnaffordable(Exception):
    """``b`` cannot pay the settlement's fee. Keep the channel; retry later or at a lower rate."""

    def __init__(self, server_value: int, fee: int, why: Optional[str] = None) -> None:
        super().__init__(why or f"the server's value {server_value} sat cannot pay the settlement fee {fee} sat")
        self.server_value = server_value
        self.fee = fee


class SettlementRejected(Exception):
    """The settlement we built does not pass Bitcoin Core's script check: a bug or a bad
    client signature that slipped through. Never broadcast it."""


@dataclass(frozen=True)
class Settlement:
    """A built, signed settlement. ``payout_value`` is None when the payout was dust."""

    tx: Transaction
    raw: bytes
    fee: int
    payout_value: Optional[int]
    fee_rate: int

    @property
    def size(self) -> int:
        return len(self.raw)


def fee_for_size(fee_rate: int, size: int) -> int:
    """``floor(max(fee_rate, 1000) * size / 1000)``: bitcoinj's formula with its rate floor."""
    return max(fee_rate, FEE_RATE_FLOOR) * size // 1000


def _check_args(contract_value: int, client_change_value: int, client_signature: bytes) -> int:
    if not 0 < contract_value <= MAX_MONEY:
        raise ValueError(f"contract value {contract_value} out of range")
    if not 0 <= client_change_value <= contract_value:
        raise ValueError(f"client change {client_change_value} out of range (channel: {contract_value} sat)")
    if not client_signature or client_signature[-1] != payment_sighash_type(client_change_value):
        raise ValueError("the client signature's sighash byte does not match the client change")
    return contract_value - client_change_value


def _outputs(
    channel: ChannelScript, client_change_value: int, payout: Optional[tuple[int, bytes]]
) -> list[Any]:
    outputs = []
    if client_change_value > 0:
        outputs.append(tx_output(client_change_value, channel.client_change_script))
    if payout is not None:
        outputs.append(tx_output(payout[0], payout[1]))
    return outputs


def _assemble(
    channel: ChannelScript,
    contract_txid: bytes,
    outputs: list[Any],
    client_signature: bytes,
    server_signer: ISigner,
    server_hashtype: int = SIGHASH_ALL,
) -> tuple[Transaction, bytes]:
    """Sign the transaction with these outputs and return it with the server signature."""
    unsigned = make_transaction([tx_input(contract_txid, 0, FINAL_SEQUENCE)], outputs, 0, TX_VERSION)
    digest = signature_hash(unsigned, 0, channel.script_code, server_hashtype)
    server_signature = sign(server_signer, digest, server_hashtype)
    script_sig = cooperative_script_sig(channel, client_signature, server_signature)
    signed_input = tx_input(contract_txid, 0, FINAL_SEQUENCE, script_sig)
    signed = make_transaction([signed_input], outputs, 0, TX_VERSION)
    return signed, server_signature


def _size_with(
    channel: ChannelScript,
    contract_txid: bytes,
    outputs: list[Any],
    client_signature: bytes,
    server_signature_size: int,
) -> int:
    """Serialised size of the signed settlement if the server signature had this length."""
    placeholder = b"\x30" * server_signature_size
    script_sig = cooperative_script_sig(channel, client_signature, placeholder)
    tx = make_transaction([tx_input(contract_txid, 0, FINAL_SEQUENCE, script_sig)], outputs, 0, TX_VERSION)
    return len(serialize(tx))


def build_settlement(
    channel: ChannelScript,
    contract_txid: bytes,
    contract_value: int,
    client_change_value: int,
    client_signature: bytes,
    server_signer: ISigner,
    payout_script: bytes,
    fee_rate: int,
) -> Settlement:
    """Build and sign the settlement for the latest accepted payment (our fee rule, above).

    ``client_signature`` is the payment signature the server accepted for
    ``client_change_value`` (``sig_C``); ``payout_script`` is the server wallet's scriptPubKey;
    ``fee_rate`` in sat/kB (raised to the 1000 floor). The fee is ``fee_for_size(fee_rate,
    size)`` of the result, or that of ``size + 1`` (rarely ``+ 2``) when no exact choice
    exists (module docstring); with no payout it is all of ``b``. The result has passed
    :func:`~twisted_paychan.bitcoin.consensus.verify_input` against the contract output;
    otherwise :class:`SettlementRejected`. Raises :class:`SettlementUnaffordable` if ``b``
    cannot pay the fee.
    """
    server_value = _check_args(contract_value, client_change_value, client_signature)
    rate = max(fee_rate, FEE_RATE_FLOOR)
    dust = max(dust_threshold(payout_script), 1)
    result: Optional[Settlement] = None

    # With a payout output: iterate on the server signature's length (it depends on the payout
    # amount it signs) until the fee we charged is the fee the real size needs.
    assumed = MAX_LOW_S_SIGNATURE_SIZE
    tried: set[int] = set()
    while assumed not in tried:
        tried.add(assumed)
        probe = _outputs(channel, client_change_value, (0, payout_script))
        fee = fee_for_size(rate, _size_with(channel, contract_txid, probe, client_signature, assumed))
        payout = server_value - fee
        if payout < dust:
            break
        outputs = _outputs(channel, client_change_value, (payout, payout_script))
        tx, server_signature = _assemble(channel, contract_txid, outputs, client_signature, server_signer)
        raw = serialize(tx)
        needed = fee_for_size(rate, len(raw))
        if needed <= fee and (result is None or fee < result.fee):
            result = Settlement(tx, raw, fee, payout, rate)
        if needed == fee:
            break
        assumed = len(server_signature)

    if result is None:
        # No payout: the transaction (and its signature) no longer depends on the fee.
        outputs = _outputs(channel, client_change_value, None)
        if not outputs:
            # c = 0 and even the payout is dust: a transaction needs an output, so there is no
            # settlement that gives everything to the fee.
            probe = _outputs(channel, 0, (0, payout_script))
            size = _size_with(channel, contract_txid, probe, client_signature, MAX_LOW_S_SIGNATURE_SIZE)
            raise SettlementUnaffordable(server_value, fee_for_size(rate, size) + dust)
        tx, _ = _assemble(channel, contract_txid, outputs, client_signature, server_signer)
        raw = serialize(tx)
        needed = fee_for_size(rate, len(raw))
        if server_value < needed:
            raise SettlementUnaffordable(server_value, needed)
        result = Settlement(tx, raw, server_value, None, rate)

    if not consensus.verify_input(result.raw, 0, channel.script_pubkey, contract_value):
        raise SettlementRejected("the settlement does not pass Bitcoin Core's script check")
    return result


def bitcoinj_settlement_fee_estimate(
    channel: ChannelScript,
    contract_txid: bytes,
    contract_value: int,
    client_change_value: int,
    client_signature: bytes,
    server_signer: ISigner,
    payout_script: bytes,
    fee_rate: int,
) -> int:
    """The fee stock bitcoinj takes for this settlement (§8.2 step 4). **Not used by us.**

    bitcoinj signs the input provisionally with NONE|ANYONECANPAY (a digest that ignores the
    outputs, so it is fixed), then ``Wallet.completeTx`` loops: add the payout ``b - fee`` (or
    give a dust payout to the fee), size a copy of the transaction in which the signed input
    was copied wrongly (``40 + varint_size(n)`` bytes too many, ``n`` the input's serialised
    size), and stop once the fee covers ``floor(r * size / 1000)``. Raises
    :class:`SettlementUnaffordable` where bitcoinj would fail with insufficient money.
    """
    server_value = _check_args(contract_value, client_change_value, client_signature)
    rate = max(fee_rate, FEE_RATE_FLOOR)
    _, provisional = _assemble(
        channel, contract_txid, _outputs(channel, client_change_value, None), client_signature,
        server_signer, SIGHASH_NONE_ANYONECANPAY,
    )
    script_sig_size = len(cooperative_script_sig(channel, client_signature, provisional))
    input_size = 36 + len(compact_size(script_sig_size)) + script_sig_size + 4
    bug = 40 + len(compact_size(input_size))
    dust = dust_threshold(payout_script)

    fee = 0
    while True:
        change = server_value - fee
        payout: Optional[tuple[int, bytes]] = None
        if change > 0:
            if change < dust:
                fee += change
            else:
                payout = (change, payout_script)
        elif change < 0:
            raise SettlementUnaffordable(server_value, fee)
        outputs = _outputs(channel, client_change_value, payout)
        size = _size_with(channel, contract_txid, outputs, client_signature, len(provisional)) + bug
        needed = fee_for_size(rate, size)
        if fee >= needed:
            return fee
        fee = needed
