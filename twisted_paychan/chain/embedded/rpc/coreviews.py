"""
Blocks, headers, transactions and scripts as Bitcoin Core's RPC shows them.

Each function returns the JSON object Core builds for the same thing (``core_write.cpp``
``TxToUniv``/``ScriptToUniv``, ``blockchain.cpp`` ``blockheaderToJSON``/``blockToJSON``), field
for field and in Core's order, so clients written against Core read ours unchanged. Amounts are
Decimals with eight places (``jsonenc.btc``); hashes are display hex.
"""

from __future__ import annotations

import struct
from typing import Any, Final, Optional, Sequence

from bitcoin.core import CTransaction
from bitcoin.core.script import OPCODE_NAMES, CScript, CScriptInvalidError

from twisted_paychan.bitcoin import der, descriptors
from twisted_paychan.bitcoin.addresses import AddressError, Network, script_to_address
from twisted_paychan.bitcoin.scripts import decode_script_number
from twisted_paychan.bitcoin.transactions import weight
from twisted_paychan.chain.types import Utxo, display_hex
from twisted_paychan.rpc.jsonenc import btc

_OP_PUSHDATA4: Final = 0x4E
_OP_RETURN: Final = 0x6A
_SIGHASH_NAMES: Final = {
    0x01: "ALL",
    0x81: "ALL|ANYONECANPAY",
    0x02: "NONE",
    0x82: "NONE|ANYONECANPAY",
    0x03: "SINGLE",
    0x83: "SINGLE|ANYONECANPAY",
}


def _op_name(opcode: int) -> str:
    """Core's GetOpName: small numbers as digits, the soft-forked NOPs by their new names."""
    if opcode == 0x4F:
        return "-1"
    if 0x51 <= opcode <= 0x60:
        return str(opcode - 0x50)
    if opcode == 0xB1:
        return "OP_CHECKLOCKTIMEVERIFY"
    if opcode == 0xB2:
        return "OP_CHECKSEQUENCEVERIFY"
    if opcode == 0xBA:
        return "OP_CHECKSIGADD"
    if opcode > 0xB9:
        return "OP_UNKNOWN"
    for op, name in OPCODE_NAMES.items():
        if int(op) == opcode:
            return str(name)
    return "OP_UNKNOWN"


def _looks_like_signature(data: bytes) -> bool:
    """Core's CheckSignatureEncoding with STRICTENC: strict DER and a defined sighash type."""
    return der.is_valid_signature_encoding(data) and data[-1] in _SIGHASH_NAMES


def script_asm(script: bytes, decode_sighash: bool = False) -> str:
    """Core's ScriptToAsmStr. ``decode_sighash`` (for scriptSigs) writes a signature's last byte
    as ``[ALL]`` and the like."""
    words: list[str] = []
    unspendable = script[:1] == bytes([_OP_RETURN])
    try:
        for opcode, data, _ in CScript(script).raw_iter():
            if opcode <= _OP_PUSHDATA4:
                assert data is not None
                if len(data) <= 4:
                    words.append(str(decode_script_number(data, require_minimal=False)))
                elif decode_sighash and not unspendable and _looks_like_signature(data):
                    words.append(data[:-1].hex() + f"[{_SIGHASH_NAMES[data[-1]]}]")
                else:
                    words.append(data.hex())
            else:
                words.append(_op_name(opcode))
    except CScriptInvalidError:
        words.append("[error]")
    return " ".join(words)


def _is_pubkey(data: bytes) -> bool:
    return (len(data) == 33 and data[0] in (2, 3)) or (len(data) == 65 and data[0] == 4)


def _push_ops(script: bytes) -> Optional[list[tuple[int, Optional[bytes]]]]:
    try:
        return [(op, data) for op, data, _ in CScript(script).raw_iter()]
    except CScriptInvalidError:
        return None


def script_type(script: bytes) -> str:
    """Core's Solver result name for an output script."""
    n = len(script)
    if n == 23 and script[0] == 0xA9 and script[1] == 20 and script[22] == 0x87:
        return "scripthash"
    if 4 <= n <= 42 and (script[0] == 0 or 0x51 <= script[0] <= 0x60) and script[1] == n - 2:
        version = 0 if script[0] == 0 else script[0] - 0x50
        program = script[2:]
        if version == 0:
            return {20: "witness_v0_keyhash", 32: "witness_v0_scripthash"}.get(len(program), "nonstandard")
        if version == 1 and len(program) == 32:
            return "witness_v1_taproot"
        if version == 1 and program == b"\x4e\x73":
            return "anchor"
        return "witness_unknown"
    ops = _push_ops(script)
    if ops is None:
        return "nonstandard"
    if ops and ops[0][0] == _OP_RETURN and all(op <= 0x60 for op, _ in ops[1:]):
        return "nulldata"
    if len(ops) == 2 and ops[1][0] == 0xAC and ops[0][1] is not None and _is_pubkey(ops[0][1]):
        return "pubkey"
    if n == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "pubkeyhash"
    if _multisig(ops) is not None:
        return "multisig"
    return "nonstandard"


def _multisig(ops: list[tuple[int, Optional[bytes]]]) -> Optional[tuple[int, list[bytes]]]:
    if len(ops) < 4 or ops[-1][0] != 0xAE:
        return None
    m, n = ops[0][0] - 0x50, ops[-2][0] - 0x50
    keys = [data for _, data in ops[1:-2]]
    if not (1 <= m <= n <= 16 and len(keys) == n and all(k is not None and _is_pubkey(k) for k in keys)):
        return None
    return m, [k for k in keys if k is not None]


def descriptor(script: bytes, network: Network) -> str:
    """What Core's InferDescriptor says of a script whose keys it does not hold."""
    kind = script_type(script)
    ops = _push_ops(script) or []
    if kind == "pubkey" and ops[0][1] is not None:
        return descriptors.with_checksum(f"pk({ops[0][1].hex()})")
    if kind == "multisig":
        found = _multisig(ops)
        assert found is not None
        m, keys = found
        return descriptors.with_checksum(f"multi({m},{','.join(k.hex() for k in keys)})")
    return descriptors.infer(script, network)


def script_pubkey_json(script: bytes, network: Network) -> dict[str, Any]:
    result: dict[str, Any] = {
        "asm": script_asm(script),
        "desc": descriptor(script, network),
        "hex": script.hex(),
    }
    kind = script_type(script)
    if kind not in ("pubkey", "multisig", "nulldata", "nonstandard"):
        try:
            result["address"] = script_to_address(script, network)
        except AddressError:
            pass
    result["type"] = kind
    return result


def tx_json(
    raw: bytes,
    network: Network,
    *,
    include_hex: bool = True,
    spent: Optional[Sequence[Utxo]] = None,
    show_prevouts: bool = False,
) -> dict[str, Any]:
    """Core's TxToUniv. ``spent`` (the coins the inputs spend, when known) adds ``fee``, and
    with ``show_prevouts`` each input's ``prevout`` (``getblock`` verbosity 3)."""
    tx = CTransaction.deserialize(raw)
    tx_weight = weight(tx)
    result: dict[str, Any] = {
        "txid": display_hex(tx.GetTxid()),
        "hash": display_hex(tx.GetHash()),
        "version": tx.nVersion,
        "size": len(raw),
        "vsize": (tx_weight + 3) // 4,
        "weight": tx_weight,
        "locktime": tx.nLockTime,
    }
    vin = []
    for index, txin in enumerate(tx.vin):
        entry: dict[str, Any] = {}
        if tx.is_coinbase():
            entry["coinbase"] = bytes(txin.scriptSig).hex()
        else:
            entry["txid"] = display_hex(bytes(txin.prevout.hash))
            entry["vout"] = txin.prevout.n
            script_sig = bytes(txin.scriptSig)
            entry["scriptSig"] = {"asm": script_asm(script_sig, decode_sighash=True), "hex": script_sig.hex()}
        if tx.wit is not None and index < len(tx.wit.vtxinwit):
            stack = list(tx.wit.vtxinwit[index].scriptWitness.stack)
            if stack:
                entry["txinwitness"] = [bytes(item).hex() for item in stack]
        if show_prevouts and spent is not None and not tx.is_coinbase():
            coin = spent[index]
            entry["prevout"] = {
                "generated": coin.coinbase,
                "height": coin.height,
                "value": btc(coin.value),
                "scriptPubKey": script_pubkey_json(coin.script_pubkey, network),
            }
        entry["sequence"] = txin.nSequence
        vin.append(entry)
    result["vin"] = vin
    result["vout"] = [
        {"value": btc(txout.nValue), "n": n, "scriptPubKey": script_pubkey_json(bytes(txout.scriptPubKey), network)}
        for n, txout in enumerate(tx.vout)
    ]
    if spent is not None and not tx.is_coinbase():
        result["fee"] = btc(sum(c.value for c in spent) - sum(o.nValue for o in tx.vout))
    if include_hex:
        result["hex"] = raw.hex()
    return result


def coinbase_json(tx: CTransaction) -> dict[str, Any]:
    """Core 31's ``coinbase_tx`` of a verbose ``getblock``: the coinbase's version, lock time,
    sequence, scriptSig (``coinbase``) and, if it has one, its witness (the reserved value)."""
    txin = tx.vin[0]
    result: dict[str, Any] = {
        "version": tx.nVersion,
        "locktime": tx.nLockTime,
        "sequence": txin.nSequence,
        "coinbase": bytes(txin.scriptSig).hex(),
    }
    if tx.wit is not None and tx.wit.vtxinwit:
        stack = list(tx.wit.vtxinwit[0].scriptWitness.stack)
        if stack:
            result["witness"] = bytes(stack[0]).hex()
    return result


# -- headers and blocks ------------------------------------------------------------------------


def compact_to_target(bits: int) -> int:
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def block_work(bits: int) -> int:
    """Core's GetBlockProof: expected hashes to find a block at this target."""
    target = compact_to_target(bits)
    return 0 if target <= 0 else (1 << 256) // (target + 1)


def difficulty(bits: int) -> float:
    """Core's GetDifficulty: the target relative to difficulty 1 (0x1d00ffff)."""
    shift = (bits >> 24) & 0xFF
    value = 0x0000FFFF / (bits & 0x00FFFFFF)
    while shift < 29:
        value *= 256.0
        shift += 1
    while shift > 29:
        value /= 256.0
        shift -= 1
    return value


def header_fields(header: bytes) -> tuple[int, bytes, bytes, int, int, int]:
    """(version, prev hash, merkle root, time, bits, nonce) of an 80-byte header."""
    version = struct.unpack_from("<i", header, 0)[0]
    time, bits, nonce = struct.unpack_from("<III", header, 68)
    return version, header[4:36], header[36:68], time, bits, nonce


def header_json(
    header: bytes,
    block_hash: bytes,
    height: int,
    tip_height: int,
    median_time_past: int,
    n_tx: int,
    next_hash: Optional[bytes],
) -> dict[str, Any]:
    """Core's blockheaderToJSON for a block of the active chain. Chain work assumes every block
    has this one's ``bits``, as on regtest (no retargeting)."""
    version, prev, merkle_root, time, bits, nonce = header_fields(header)
    result: dict[str, Any] = {
        "hash": display_hex(block_hash),
        "confirmations": tip_height - height + 1,
        "height": height,
        "version": version,
        "versionHex": f"{version & 0xFFFFFFFF:08x}",
        "merkleroot": display_hex(merkle_root),
        "time": time,
        "mediantime": median_time_past,
        "nonce": nonce,
        "bits": f"{bits:08x}",
        "target": f"{compact_to_target(bits):064x}",
        "difficulty": difficulty(bits),
        "chainwork": f"{block_work(bits) * (height + 1):064x}",
        "nTx": n_tx,
    }
    if height > 0:
        result["previousblockhash"] = display_hex(prev)
    if next_hash is not None:
        result["nextblockhash"] = display_hex(next_hash)
    return result


def block_sizes(raw_block: bytes, txs: Sequence[CTransaction]) -> dict[str, int]:
    """``strippedsize``, ``size`` and ``weight`` of a serialized block."""
    witness_bytes = sum(len(tx.serialize()) - len(tx.serialize(dict(include_witness=False))) for tx in txs)
    stripped = len(raw_block) - witness_bytes
    return {"strippedsize": stripped, "size": len(raw_block), "weight": stripped * 3 + len(raw_block)}
