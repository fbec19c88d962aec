"""
The RPC methods of the embedded regtest node, with Bitcoin Core's parameters, result shapes and
error codes.

:class:`NodeMethods` wraps one ``RegtestNode``; :meth:`NodeMethods.dispatch` is what the JSON-RPC
layer (``protocol``) calls. Every method runs synchronously on the reactor thread, like the node.
Where the embedded node differs from bitcoind (no peers, no wallet, a simpler mempool), the
method still answers in Core's shape; ``doc/rpc.md`` lists the differences.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any, Callable, Final, Optional

from bitcoin.core import CTransaction
from twisted.logger import Logger

from twisted_paychan.bitcoin import descriptors
from twisted_paychan.bitcoin.addresses import REGTEST, AddressError, address_to_script
from twisted_paychan.bitcoin.transactions import virtual_size
from twisted_paychan.chain.embedded.chunks import mempool_chunks
from twisted_paychan.chain.embedded.index import parse_block
from twisted_paychan.chain.embedded.node import MiningFailed, RegtestNode
from twisted_paychan.chain.embedded.rpc import coreviews
from twisted_paychan.chain.embedded.rpc.nodeview import NodeView
from twisted_paychan.chain.embedded.rpc.params import (
    ARRAY,
    BOOL,
    NUMBER,
    STRING,
    Param,
    as_int,
    bind,
    optional_bool,
    parse_hash,
    usage,
    verbosity,
)
from twisted_paychan.chain.types import BroadcastRejected, OutPoint, TxState, display_hex
from twisted_paychan.rpc.errors import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INTERNAL_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RpcError,
)
from twisted_paychan.rpc.jsonenc import btc, sat
from twisted_paychan.rpc.protocol import Params

log = Logger()

#: sendrawtransaction's default maxfeerate, BTC/kvB (Core's DEFAULT_MAX_RAW_TX_FEE_RATE).
DEFAULT_MAX_FEE_RATE: Final = Decimal("0.10")
#: Core refuses fee estimates for targets beyond this many blocks.
MAX_CONF_TARGET: Final = 1008
#: Core's "tip older than this" test for initial block download (DEFAULT_MAX_TIP_AGE).
MAX_TIP_AGE: Final = 24 * 60 * 60
_ESTIMATE_MODES: Final = ("unset", "economical", "conservative")
_MAX_SCRIPT_SIZE: Final = 10_000
_DECODE_FAILED: Final = "TX decode failed. Make sure the tx has at least one input."
NO_FEE_ESTIMATE: Final = "Insufficient data or no feerate found"

Method = Callable[..., Any]
_TABLE: dict[str, tuple[str, list[Param]]] = {}


def rpc(name: str, *spec: Param) -> Callable[[Method], Method]:
    """Register a method of :class:`NodeMethods` under its RPC name."""

    def register(method: Method) -> Method:
        _TABLE[name] = (method.__name__, list(spec))
        return method

    return register


def _nonnegative_fee_rate(value: Any) -> Decimal:
    try:
        rate = Decimal(sat(value)) / 100_000_000
    except (ValueError, ArithmeticError):
        raise RpcError(RPC_INVALID_PARAMETER, "Invalid amount") from None
    if rate < 0:
        raise RpcError(RPC_INVALID_PARAMETER, "Amount out of range")
    if rate >= 1:
        raise RpcError(RPC_INVALID_PARAMETER, "Fee rates larger than or equal to 1BTC/kvB are not accepted")
    return rate


def _decode_tx(hexstring: str) -> tuple[bytes, CTransaction]:
    try:
        raw = bytes.fromhex(hexstring)
        return raw, CTransaction.deserialize(raw)
    except Exception:  # python-bitcoinlib raises several types on bad input
        raise RpcError(RPC_DESERIALIZATION_ERROR, _DECODE_FAILED) from None


class NodeMethods:
    """The method table of one node.

    ``fee_rate`` (sat/kB) is what ``estimatesmartfee`` answers (regtest has no fee market);
    None answers "no estimate" as a fresh Core node does. ``on_stop`` is called after the reply
    to ``stop`` has been sent (the server arranges that).
    """

    def __init__(
        self,
        node: RegtestNode,
        fee_rate: Optional[int] = None,
        on_stop: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.node = node
        self.view = NodeView(node)
        self.fee_rate = fee_rate
        self.on_stop = on_stop
        self.network = REGTEST
        self._mempool_sequence = 0
        self._started = node.reactor.seconds()
        #: Calls to make once the current reply is sent (``stop``); the server drains it.
        self.after_reply: list[Callable[[], Any]] = []
        node.on_change(self._changed)

    def _changed(self) -> None:
        self._mempool_sequence += 1

    def names(self) -> list[str]:
        return sorted(_TABLE)

    def dispatch(self, method: str, params: Params) -> Any:
        entry = _TABLE.get(method)
        if entry is None:
            raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
        attribute, spec = entry
        args = bind(method, spec, params)
        try:
            return getattr(self, attribute)(*args)
        except RpcError:
            raise
        except Exception as e:
            log.failure("RPC {method} failed", method=method)
            raise RpcError(RPC_INTERNAL_ERROR, f"{type(e).__name__}: {e}") from e

    # -- helpers -------------------------------------------------------------------------------

    def _block_height(self, block_hash: bytes) -> int:
        height = self.node.height_of(block_hash)
        if height is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return height

    def _header_json(self, height: int, raw_block: Optional[bytes] = None) -> dict[str, Any]:
        node = self.node
        block_hash = node.block_hash_at(height)
        header = node.header(block_hash)
        assert header is not None
        if raw_block is None:
            raw_block = node.block_at(height)
        n_tx = len(parse_block(raw_block).txids)
        next_hash = node.block_hash_at(height + 1) if height < node.height else None
        return coreviews.header_json(
            header, block_hash, height, node.height, node.tip_at(height).median_time_past, n_tx, next_hash
        )

    def _script_for_address(self, address: str) -> bytes:
        try:
            return address_to_script(address, self.network)
        except AddressError:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None

    def _spent_coins(self, tx: CTransaction) -> Optional[list[Any]]:
        if tx.is_coinbase():
            return None
        coins = [self.view.output(OutPoint(bytes(i.prevout.hash), i.prevout.n)) for i in tx.vin]
        return None if any(c is None for c in coins) else coins

    def _mine(self, count: Any, script: bytes) -> list[str]:
        count = as_int(count, "nblocks")
        try:
            return [display_hex(h) for h in self.node.generate(max(0, count), script)]
        except MiningFailed as e:
            raise RpcError(RPC_INTERNAL_ERROR, str(e)) from e

    # -- blockchain ----------------------------------------------------------------------------

    @rpc("getblockchaininfo")
    def getblockchaininfo(self) -> dict[str, Any]:
        node = self.node
        tip = node.tip()
        header = node.header(tip.block_hash)
        assert header is not None
        bits = coreviews.header_fields(header)[4]
        return {
            "chain": "regtest",
            "blocks": tip.height,
            "headers": tip.height,
            "bestblockhash": display_hex(tip.block_hash),
            "bits": f"{bits:08x}",
            "target": f"{coreviews.compact_to_target(bits):064x}",
            "difficulty": coreviews.difficulty(bits),
            "time": tip.time,
            "mediantime": tip.median_time_past,
            "verificationprogress": 1,
            "initialblockdownload": node.reactor.seconds() - tip.time > MAX_TIP_AGE,
            "chainwork": f"{coreviews.block_work(bits) * (tip.height + 1):064x}",
            "size_on_disk": _size_on_disk(node.datadir / "blocks"),
            "pruned": False,
            "warnings": [],
        }

    @rpc("getblockcount")
    def getblockcount(self) -> int:
        return self.node.height

    @rpc("getbestblockhash")
    def getbestblockhash(self) -> str:
        return display_hex(self.node.tip().block_hash)

    @rpc("getblockhash", Param("height", (NUMBER,)))
    def getblockhash(self, height: Any) -> str:
        height = as_int(height, "height")
        if not 0 <= height <= self.node.height:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return display_hex(self.node.block_hash_at(height))

    @rpc("getblockheader", Param("blockhash", (STRING,)), Param("verbose", (BOOL,), True))
    def getblockheader(self, blockhash: str, verbose: bool) -> Any:
        height = self._block_height(parse_hash(blockhash, "hash"))
        if not verbose:
            header = self.node.header(self.node.block_hash_at(height))
            assert header is not None
            return header.hex()
        return self._header_json(height)

    @rpc("getblock", Param("blockhash", (STRING,)), Param("verbosity", (NUMBER, BOOL), 1))
    def getblock(self, blockhash: str, verbosity_arg: Any) -> Any:
        level = verbosity(verbosity_arg, 1)
        height = self._block_height(parse_hash(blockhash, "blockhash"))
        raw = self.node.block_at(height)
        if level <= 0:
            return raw.hex()
        block = parse_block(raw)
        result = self._header_json(height, raw)
        result.update(coreviews.block_sizes(raw, block.txs))
        result["coinbase_tx"] = coreviews.coinbase_json(block.txs[0])  # Core 31
        if level == 1:
            result["tx"] = [display_hex(t) for t in block.txids]
        else:
            result["tx"] = [
                coreviews.tx_json(
                    tx_raw, self.network, spent=self._spent_coins(tx), show_prevouts=level >= 3
                )
                for tx, tx_raw in zip(block.txs, block.raws)
            ]
        return result

    # -- transactions --------------------------------------------------------------------------

    @rpc(
        "getrawtransaction",
        Param("txid", (STRING,)),
        Param("verbosity", (NUMBER, BOOL), 0),
        Param("blockhash", (STRING,), None),
    )
    def getrawtransaction(self, txid_hex: str, verbosity_arg: Any, blockhash: Optional[str]) -> Any:
        txid = parse_hash(txid_hex, "parameter 1")
        level = verbosity(verbosity_arg, 0)
        node = self.node
        if blockhash is not None:
            block_hash = parse_hash(blockhash, "parameter 3")
            height = node.height_of(block_hash)
            if height is None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
            block = parse_block(node.block_at(height))
            if txid not in block.txids:
                raise RpcError(
                    RPC_INVALID_ADDRESS_OR_KEY,
                    "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                )
            raw = block.raws[block.txids.index(txid)]
        else:
            found = node.raw_transaction(txid)
            if found is None:
                raise RpcError(
                    RPC_INVALID_ADDRESS_OR_KEY,
                    "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
                )
            raw = found
        if level <= 0:
            return raw.hex()
        result: dict[str, Any] = {}
        if blockhash is not None:
            result["in_active_chain"] = True
        status = node.tx_status(txid)
        tx = CTransaction.deserialize(raw)
        spent = self._spent_coins(tx) if level >= 2 and status.state is TxState.CONFIRMED else None
        result.update(coreviews.tx_json(raw, self.network, spent=spent, show_prevouts=spent is not None))
        if status.state is TxState.CONFIRMED:
            assert status.block_hash is not None and status.block_height is not None
            block_time = node.tip_at(status.block_height).time
            result["blockhash"] = display_hex(status.block_hash)
            result["confirmations"] = status.confirmations
            result["time"] = block_time
            result["blocktime"] = block_time
        return result

    @rpc(
        "sendrawtransaction",
        Param("hexstring", (STRING,)),
        Param("maxfeerate", (NUMBER, STRING), DEFAULT_MAX_FEE_RATE),
        Param("maxburnamount", (NUMBER, STRING), Decimal(0)),
    )
    def sendrawtransaction(self, hexstring: str, maxfeerate: Any, maxburnamount: Any) -> str:
        raw, tx = _decode_tx(hexstring)
        max_rate = _nonnegative_fee_rate(maxfeerate)
        try:
            max_burn = sat(maxburnamount)
        except (ValueError, ArithmeticError):
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid amount") from None
        for txout in tx.vout:
            script = bytes(txout.scriptPubKey)
            if (script[:1] == b"\x6a" or len(script) > _MAX_SCRIPT_SIZE) and txout.nValue > max_burn:
                raise RpcError(RPC_VERIFY_ERROR, "Unspendable output exceeds maximum configured by user (maxburnamount)")
        txid = tx.GetTxid()
        node = self.node
        if node.tx_status(txid).state is TxState.CONFIRMED:
            unspent = any(
                self.view.coin(OutPoint(txid, n), mempool_outputs=False, mempool_spends=False) is not None
                for n in range(len(tx.vout))
            )
            if unspent:
                raise RpcError(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
            raise RpcError(RPC_VERIFY_ERROR, "bad-txns-inputs-missingorspent")
        if max_rate > 0:
            value_in = self.view.input_value(tx)
            if value_in is not None:
                fee = value_in - sum(o.nValue for o in tx.vout)
                vsize = virtual_size(tx)
                if fee > int(max_rate * 100_000_000) * vsize // 1000:
                    raise RpcError(RPC_VERIFY_ERROR, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")
        try:
            return display_hex(node.accept(raw))
        except BroadcastRejected as e:
            if e.code == RPC_DESERIALIZATION_ERROR:
                raise RpcError(e.code, _DECODE_FAILED) from e
            raise RpcError(e.code, e.reason) from e

    @rpc("testmempoolaccept", Param("rawtxs", (ARRAY,)), Param("maxfeerate", (NUMBER, STRING), DEFAULT_MAX_FEE_RATE))
    def testmempoolaccept(self, rawtxs: list[Any], maxfeerate: Any) -> list[dict[str, Any]]:
        if not 1 <= len(rawtxs) <= 25:
            raise RpcError(RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
        max_rate = _nonnegative_fee_rate(maxfeerate)
        results = []
        for item in rawtxs:
            if not isinstance(item, str):
                raise RpcError(RPC_DESERIALIZATION_ERROR, f"TX decode failed: {item} Make sure the tx has at least one input.")
            try:
                raw, tx = _decode_tx(item)
            except RpcError:
                raise RpcError(
                    RPC_DESERIALIZATION_ERROR, f"TX decode failed: {item} Make sure the tx has at least one input."
                ) from None
            results.append(self._test_one(raw, tx, max_rate))
        return results

    def _test_one(self, raw: bytes, tx: CTransaction, max_rate: Decimal) -> dict[str, Any]:
        txid = tx.GetTxid()
        result: dict[str, Any] = {"txid": display_hex(txid), "wtxid": display_hex(tx.GetHash())}
        state = self.node.tx_status(txid).state
        if state is not TxState.UNKNOWN:
            result["allowed"] = False
            if state is TxState.MEMPOOL:
                result["reject-reason"] = "txn-already-in-mempool"
            elif any(
                self.view.coin(OutPoint(txid, n), mempool_outputs=False, mempool_spends=False) is not None
                for n in range(len(tx.vout))
            ):
                result["reject-reason"] = "txn-already-known"
            else:
                result["reject-reason"] = "missing-inputs"
            return result
        try:
            fee = self.view.test_accept(raw, tx)
        except BroadcastRejected as e:
            result["allowed"] = False
            # Core 28+: the reason's token, and the whole of it as details.
            result["reject-reason"] = "missing-inputs" if e.code == RPC_VERIFY_ERROR else e.reason.split(", ", 1)[0]
            result["reject-details"] = e.reason
            return result
        vsize = virtual_size(tx)
        if max_rate > 0 and fee > int(max_rate * 100_000_000) * vsize // 1000:
            result["allowed"] = False
            result["reject-reason"] = "max-fee-exceeded"
            return result
        result["allowed"] = True
        result["vsize"] = vsize
        result["fees"] = {
            "base": btc(fee),
            "effective-feerate": btc(fee * 1000 // vsize),
            "effective-includes": [display_hex(tx.GetHash())],
        }
        return result

    @rpc("gettxout", Param("txid", (STRING,)), Param("n", (NUMBER,)), Param("include_mempool", (BOOL,), True))
    def gettxout(self, txid_hex: str, n: Any, include_mempool: Any) -> Optional[dict[str, Any]]:
        txid = parse_hash(txid_hex, "txid")
        index = as_int(n, "n")
        if index < 0:
            return None
        mempool = optional_bool(include_mempool, True)
        coin = self.view.coin(OutPoint(txid, index), mempool_outputs=mempool, mempool_spends=mempool)
        if coin is None:
            return None
        tip = self.node.tip()
        return {
            "bestblock": display_hex(tip.block_hash),
            "confirmations": 0 if coin.height is None else tip.height - coin.height + 1,
            "value": btc(coin.value),
            "scriptPubKey": coreviews.script_pubkey_json(coin.script_pubkey, self.network),
            "coinbase": coin.coinbase,
        }

    @rpc("gettxspendingprevout", Param("outputs", (ARRAY,)))
    def gettxspendingprevout(self, outputs: list[Any]) -> list[dict[str, Any]]:
        """Core 24+: which mempool transaction spends each outpoint."""
        if not outputs:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, outputs are missing")
        results = []
        for item in outputs:
            if not isinstance(item, dict) or "txid" not in item or "vout" not in item:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, expected an object with txid and vout")
            txid = parse_hash(str(item["txid"]), "txid")
            vout = as_int(item["vout"], "vout")
            if vout < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            entry: dict[str, Any] = {"txid": display_hex(txid), "vout": vout}
            spender = self.view.mempool_spender(OutPoint(txid, vout))
            if spender is not None:
                entry["spendingtxid"] = display_hex(spender)
            results.append(entry)
        return results

    @rpc("getrawmempool", Param("verbose", (BOOL,), False), Param("mempool_sequence", (BOOL,), False))
    def getrawmempool(self, verbose: bool, mempool_sequence: bool) -> Any:
        entries = self.node.mempool_entries()
        if verbose and mempool_sequence:
            raise RpcError(RPC_INVALID_PARAMETER, "Verbose results cannot contain mempool sequence values.")
        if mempool_sequence:
            return {"txids": [display_hex(e.txid) for e in entries], "mempool_sequence": self._mempool_sequence}
        if not verbose:
            return [display_hex(e.txid) for e in entries]
        return _verbose_mempool(entries, self.node.height)

    @rpc("getmempoolentry", Param("txid", (STRING,)))
    def getmempoolentry(self, txid: str) -> Any:
        wanted = display_hex(parse_hash(txid, "txid"))
        entry = _verbose_mempool(self.node.mempool_entries(), self.node.height).get(wanted)
        if entry is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
        return entry

    @rpc("scantxoutset", Param("action", (STRING,)), Param("scanobjects", (ARRAY,), None))
    def scantxoutset(self, action: str, scanobjects: Optional[list[Any]]) -> Any:
        if action == "status":
            return None
        if action == "abort":
            return False
        if action != "start":
            raise RpcError(RPC_INVALID_PARAMETER, f"Invalid action '{action}'")
        if scanobjects is None:
            raise RpcError(RPC_INVALID_PARAMETER, "scanobjects argument is required for the start action")
        scripts = []
        for item in scanobjects:
            text = item.get("desc") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise RpcError(RPC_INVALID_PARAMETER, "Scan object needs to be either a string or an object")
            try:
                scripts.append(descriptors.parse(text, self.network))
            except descriptors.DescriptorError as e:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, str(e)) from None
        tip = self.node.tip()
        unspents = []
        for utxo in self.node.scan(scripts):
            assert utxo.height is not None
            unspents.append(
                {
                    "txid": display_hex(utxo.outpoint.txid),
                    "vout": utxo.outpoint.index,
                    "scriptPubKey": utxo.script_pubkey.hex(),
                    "desc": coreviews.descriptor(utxo.script_pubkey, self.network),
                    "amount": btc(utxo.value),
                    "coinbase": utxo.coinbase,
                    "height": utxo.height,
                    "blockhash": display_hex(self.node.block_hash_at(utxo.height)),
                    "confirmations": tip.height - utxo.height + 1,
                }
            )
        return {
            "success": True,
            "txouts": len(unspents),
            "height": tip.height,
            "bestblock": display_hex(tip.block_hash),
            "unspents": unspents,
            "total_amount": btc(sum(u.value for u in self.node.scan(scripts))),
        }

    # -- mining and fees -----------------------------------------------------------------------

    @rpc("generatetoaddress", Param("nblocks", (NUMBER,)), Param("address", (STRING,)), Param("maxtries", (NUMBER,), 1_000_000))
    def generatetoaddress(self, nblocks: Any, address: str, maxtries: Any) -> list[str]:
        return self._mine(nblocks, self._script_for_address(address))

    @rpc("generatetodescriptor", Param("num_blocks", (NUMBER,)), Param("descriptor", (STRING,)), Param("maxtries", (NUMBER,), 1_000_000))
    def generatetodescriptor(self, num_blocks: Any, descriptor: str, maxtries: Any) -> list[str]:
        try:
            script = descriptors.parse(descriptor, self.network)
        except descriptors.DescriptorError as e:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, str(e)) from None
        return self._mine(num_blocks, script)

    @rpc("submitblock", Param("hexdata", (STRING,)), Param("dummy", (STRING,), None))
    def submitblock(self, hexdata: str, dummy: Optional[str]) -> Optional[str]:
        try:
            raw = bytes.fromhex(hexdata)
            parse_block(raw)
        except Exception:
            raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None
        verdict = self.node.submit_block(raw)
        return None if verdict.accepted else verdict.reason

    @rpc("estimatesmartfee", Param("conf_target", (NUMBER,)), Param("estimate_mode", (STRING,), "economical"))
    def estimatesmartfee(self, conf_target: Any, estimate_mode: str) -> dict[str, Any]:
        target = as_int(conf_target, "conf_target")
        if not 1 <= target <= MAX_CONF_TARGET:
            raise RpcError(RPC_INVALID_PARAMETER, f"Invalid conf_target, must be between 1 and {MAX_CONF_TARGET}")
        if estimate_mode.lower() not in _ESTIMATE_MODES:
            raise RpcError(
                RPC_INVALID_PARAMETER,
                'Invalid estimate_mode parameter, must be one of: "unset", "economical", "conservative"',
            )
        if self.fee_rate is None:
            return {"errors": [NO_FEE_ESTIMATE], "blocks": 0}
        return {"feerate": btc(self.fee_rate), "blocks": max(2, target)}

    # -- control -------------------------------------------------------------------------------

    @rpc("stop", Param("wait", (NUMBER,), None))
    def stop(self, wait: Any) -> str:
        if self.on_stop is not None:
            self.after_reply.append(self.on_stop)
        return "paychan regtest node stopping"

    @rpc("help", Param("command", (STRING,), None))
    def help(self, command: Optional[str]) -> str:
        if command is None:
            return "\n".join(usage(name, _TABLE[name][1]) for name in self.names())
        if command not in _TABLE:
            return f"help: unknown command: {command}"
        return usage(command, _TABLE[command][1])

    @rpc("uptime")
    def uptime(self) -> int:
        return int(self.node.reactor.seconds() - self._started)


def _size_on_disk(directory: os.PathLike[str]) -> int:
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file():
                    total += entry.stat().st_size
    except OSError:
        pass
    return total


def _verbose_mempool(entries: list[Any], height: int) -> dict[str, Any]:
    """getrawmempool true: each entry with its in-mempool parents and children."""
    by_txid = {e.txid: e for e in entries}
    parents = {
        e.txid: sorted({bytes(i.prevout.hash) for i in e.tx.vin} & by_txid.keys()) for e in entries
    }
    children: dict[bytes, list[bytes]] = {e.txid: [] for e in entries}
    for txid, ps in parents.items():
        for p in ps:
            children[p].append(txid)

    def closure(start: bytes, edges: dict[bytes, list[bytes]]) -> set[bytes]:
        seen: set[bytes] = set()
        stack = [start]
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    chunk_of = mempool_chunks(entries, parents)
    result = {}
    for e in entries:
        chunk_weight, chunk_fee = chunk_of[e.txid]
        ancestors = closure(e.txid, parents) | {e.txid}
        descendants = closure(e.txid, children) | {e.txid}
        result[display_hex(e.txid)] = {
            "vsize": e.vsize,
            "weight": e.weight,
            "time": int(e.time),
            "height": height,
            "descendantcount": len(descendants),
            "descendantsize": sum(by_txid[t].vsize for t in descendants),
            "ancestorcount": len(ancestors),
            "ancestorsize": sum(by_txid[t].vsize for t in ancestors),
            "chunkweight": chunk_weight,
            "wtxid": display_hex(e.tx.GetHash()),
            "fees": {
                "base": btc(e.fee),
                "modified": btc(e.fee),
                "ancestor": btc(sum(by_txid[t].fee for t in ancestors)),
                "descendant": btc(sum(by_txid[t].fee for t in descendants)),
                "chunk": btc(chunk_fee),
            },
            "depends": [display_hex(p) for p in parents[e.txid]],
            "spentby": [display_hex(c) for c in sorted(children[e.txid])],
            "bip125-replaceable": False,
            "unbroadcast": False,
        }
    return result
