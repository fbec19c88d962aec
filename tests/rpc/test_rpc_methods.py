"""The node's RPC methods over HTTP: Bitcoin Core's result shapes and error codes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted

from chain_txs import ANYONE_CAN_SPEND, Coin, Key, spend, txid_of
from rpc_harness import Harness, start_harness
from twisted_paychan.bitcoin.addresses import REGTEST, script_to_address
from twisted_paychan.bitcoin.descriptors import with_checksum
from twisted_paychan.chain.embedded.rpc.methods import NodeMethods
from twisted_paychan.chain.types import OutPoint, display_hex
from twisted_paychan.rpc.errors import RpcError

ALICE = Key.from_seed(b"rpc methods alice")
BOB = Key.from_seed(b"rpc methods bob")
GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = await start_harness(tmp_path, fee_rate=2500)
    try:
        yield made
    finally:
        await made.close()


async def error_of(harness: Harness, method: str, *params: Any) -> tuple[int, str]:
    with pytest.raises(RpcError) as caught:
        await harness.connection.call(method, *params)
    return caught.value.code, caught.value.message


def funded(harness: Harness, value: int = 100_000, segwit: bool = False) -> Coin:
    script = ALICE.p2wpkh if segwit else ALICE.p2pkh
    return Coin(harness.inner.fund(script, value), value, ALICE, segwit)


def pay_bob(coin: Coin, fee: int = 1_000) -> bytes:
    return spend([coin], [(BOB.p2pkh, coin.value - fee)])


@pytest_twisted.ensureDeferred
async def test_getblockchaininfo(harness: Harness) -> None:
    info = await harness.connection.call("getblockchaininfo")
    tip = harness.node.tip()
    assert info["chain"] == "regtest"
    assert (info["blocks"], info["headers"]) == (tip.height, tip.height)
    assert info["bestblockhash"] == display_hex(tip.block_hash)
    assert (info["time"], info["mediantime"]) == (tip.time, tip.median_time_past)
    assert info["bits"] == "207fffff"
    assert int(info["chainwork"], 16) == 2 * (tip.height + 1)
    assert info["difficulty"] == Decimal("4.6565423739069247E-10")
    assert info["pruned"] is False and info["warnings"] == []
    assert info["size_on_disk"] > 0


@pytest_twisted.ensureDeferred
async def test_heights_and_hashes(harness: Harness) -> None:
    call = harness.connection.call
    assert await call("getblockcount") == harness.node.height
    assert await call("getbestblockhash") == display_hex(harness.node.tip().block_hash)
    assert await call("getblockhash", 0) == GENESIS
    assert await error_of(harness, "getblockhash", harness.node.height + 1) == (-8, "Block height out of range")
    assert (await error_of(harness, "getblockhash", "1"))[0] == -3
    assert (await error_of(harness, "getblockhash"))[0] == -1


@pytest_twisted.ensureDeferred
async def test_getblockheader(harness: Harness) -> None:
    call = harness.connection.call
    hashes = harness.inner.mine(2)
    first = display_hex(hashes[0])
    header = await call("getblockheader", first)
    height = harness.node.height - 1
    assert header["hash"] == first
    assert (header["height"], header["confirmations"], header["nTx"]) == (height, 2, 1)
    assert header["previousblockhash"] == display_hex(harness.node.block_hash_at(height - 1))
    assert header["nextblockhash"] == display_hex(hashes[1])
    assert header["versionHex"] == "20000000"
    assert header["mediantime"] == harness.node.tip_at(height).median_time_past
    assert await call("getblockheader", first, False) == harness.node.header(hashes[0]).hex()
    assert "nextblockhash" not in await call("getblockheader", display_hex(hashes[1]))
    assert "previousblockhash" not in await call("getblockheader", GENESIS)
    assert await error_of(harness, "getblockheader", "00" * 32) == (-5, "Block not found")
    assert await error_of(harness, "getblockheader", "abc") == (-8, "hash must be of length 64 (not 3, for 'abc')")
    assert (await error_of(harness, "getblockheader", "zz" * 32))[0] == -8


@pytest_twisted.ensureDeferred
async def test_getblock_verbosities(harness: Harness) -> None:
    call = harness.connection.call
    coin = funded(harness, segwit=True)
    raw = pay_bob(coin, fee=1_500)
    await call("sendrawtransaction", raw.hex())
    [block_hash] = harness.inner.mine(1)
    h = display_hex(block_hash)
    assert await call("getblock", h, 0) == harness.node.block(block_hash).hex()
    one = await call("getblock", h)
    assert one["tx"][1] == display_hex(txid_of(raw))
    assert one["nTx"] == 2
    assert one["size"] == len(harness.node.block(block_hash))
    assert one["strippedsize"] < one["size"] and one["weight"] == one["strippedsize"] * 3 + one["size"]
    two = await call("getblock", h, 2)
    coinbase, tx = two["tx"]
    assert "coinbase" in coinbase["vin"][0] and "fee" not in coinbase
    assert tx["fee"] == Decimal("0.00001500")
    assert tx["hex"] == raw.hex()
    assert tx["vin"][0]["txinwitness"][1] == ALICE.pub.hex()
    assert tx["vout"][0]["scriptPubKey"]["type"] == "pubkeyhash"
    assert tx["vout"][0]["scriptPubKey"]["address"] == script_to_address(BOB.p2pkh, REGTEST)
    assert tx["vout"][0]["value"] == Decimal(coin.value - 1_500) / 100_000_000
    three = await call("getblock", h, 3)
    prevout = three["tx"][1]["vin"][0]["prevout"]
    assert prevout["value"] == Decimal("0.00100000")
    assert prevout["scriptPubKey"]["type"] == "witness_v0_keyhash"
    assert (await call("getblock", h, True))["tx"] == one["tx"]


@pytest_twisted.ensureDeferred
async def test_getrawtransaction(harness: Harness) -> None:
    call = harness.connection.call
    raw = pay_bob(funded(harness))
    txid = display_hex(txid_of(raw))
    assert await error_of(harness, "getrawtransaction", txid) == (
        -5,
        "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
    )
    await call("sendrawtransaction", raw.hex())
    assert await call("getrawtransaction", txid) == raw.hex()
    pending = await call("getrawtransaction", txid, True)
    assert pending["txid"] == txid and "blockhash" not in pending
    [block_hash] = harness.inner.mine(1)
    confirmed = await call("getrawtransaction", txid, 1)
    assert confirmed["blockhash"] == display_hex(block_hash)
    assert confirmed["confirmations"] == 1
    assert confirmed["time"] == confirmed["blocktime"] == harness.node.tip().time
    assert confirmed["vin"][0]["scriptSig"]["asm"].endswith("[ALL] " + ALICE.pub.hex())
    in_block = await call("getrawtransaction", txid, 2, display_hex(block_hash))
    assert in_block["in_active_chain"] is True
    assert in_block["fee"] == Decimal("0.00001000")
    assert await error_of(harness, "getrawtransaction", txid, 1, GENESIS) == (
        -5,
        "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
    )
    assert await error_of(harness, "getrawtransaction", txid, 1, "11" * 32) == (-5, "Block hash not found")


@pytest_twisted.ensureDeferred
async def test_sendrawtransaction_errors(harness: Harness) -> None:
    call = harness.connection.call
    assert await error_of(harness, "sendrawtransaction", "00") == (
        -22,
        "TX decode failed. Make sure the tx has at least one input.",
    )
    assert await error_of(harness, "sendrawtransaction", "zz") == (-22, "TX decode failed. Make sure the tx has at least one input.")
    ghost = Coin(OutPoint(b"\x42" * 32, 0), 100_000, ALICE)
    assert await error_of(harness, "sendrawtransaction", pay_bob(ghost).hex()) == (-25, "bad-txns-inputs-missingorspent")
    coin = funded(harness)
    bad = spend([coin], [(BOB.p2pkh, 99_000)], corrupt=True)
    code, message = await error_of(harness, "sendrawtransaction", bad.hex())
    assert code == -26 and "script-verify-flag" in message
    raw = pay_bob(coin)
    txid = display_hex(txid_of(raw))
    assert await call("sendrawtransaction", raw.hex()) == txid
    assert await call("sendrawtransaction", raw.hex()) == txid  # already in the mempool: fine
    conflict = spend([coin], [(ALICE.p2pkh, coin.value - 500)])  # less than the 1,000 it would replace
    code, message = await error_of(harness, "sendrawtransaction", conflict.hex())
    assert (code, message.split(", ")[0]) == (-26, "insufficient fee")
    harness.inner.mine(1)
    assert await error_of(harness, "sendrawtransaction", raw.hex()) == (-27, "Transaction outputs already in utxo set")


@pytest_twisted.ensureDeferred
async def test_sendrawtransaction_maxfeerate(harness: Harness) -> None:
    coin = funded(harness, value=10_000_000)
    greedy = pay_bob(coin, fee=5_000_000)  # 5,000,000 sat on ~190 vB: far above 0.1 BTC/kvB
    assert await error_of(harness, "sendrawtransaction", greedy.hex()) == (
        -25,
        "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)",
    )
    assert await harness.connection.call("sendrawtransaction", greedy.hex(), 0) == display_hex(txid_of(greedy))


@pytest_twisted.ensureDeferred
async def test_testmempoolaccept(harness: Harness) -> None:
    call = harness.connection.call
    coin = funded(harness)
    raw = pay_bob(coin)
    [result] = await call("testmempoolaccept", [raw.hex()])
    assert result["allowed"] is True
    assert result["txid"] == display_hex(txid_of(raw))
    assert result["fees"]["base"] == Decimal("0.00001000")
    assert result["vsize"] > 0
    assert harness.node.mempool_entries() == []  # nothing was added
    [missing] = await call("testmempoolaccept", [pay_bob(Coin(OutPoint(b"\x42" * 32, 0), 100_000, ALICE)).hex()])
    assert (missing["allowed"], missing["reject-reason"]) == (False, "missing-inputs")
    [bad] = await call("testmempoolaccept", [spend([coin], [(BOB.p2pkh, 99_000)], corrupt=True).hex()])
    assert bad["allowed"] is False and "script-verify-flag" in bad["reject-reason"]
    await call("sendrawtransaction", raw.hex())
    [again] = await call("testmempoolaccept", [raw.hex()])
    assert again["reject-reason"] == "txn-already-in-mempool"
    [conflict] = await call("testmempoolaccept", [spend([coin], [(ALICE.p2pkh, coin.value - 500)]).hex()])
    assert conflict["reject-reason"] == "insufficient fee"
    assert conflict["reject-details"].endswith("less fees than conflicting txs; 0.000005 < 0.00001")
    [replacing] = await call("testmempoolaccept", [spend([coin], [(ALICE.p2pkh, coin.value - 2_000)]).hex()])
    assert replacing["allowed"] is True  # pays more: would replace it (nothing changes)
    assert len(harness.node.mempool_entries()) == 1
    assert (await error_of(harness, "testmempoolaccept", ["00"]))[0] == -22
    assert (await error_of(harness, "testmempoolaccept", []))[0] == -8


@pytest_twisted.ensureDeferred
async def test_gettxout_with_and_without_the_mempool(harness: Harness) -> None:
    call = harness.connection.call
    coin = funded(harness)
    txid = display_hex(coin.outpoint.txid)
    out = await call("gettxout", txid, 0)
    assert out["value"] == Decimal("0.00100000")
    assert out["confirmations"] == 1 and out["coinbase"] is False
    assert out["scriptPubKey"]["hex"] == ALICE.p2pkh.hex()
    assert out["bestblock"] == display_hex(harness.node.tip().block_hash)
    assert await call("gettxout", txid, 5) is None
    raw = pay_bob(coin)
    await call("sendrawtransaction", raw.hex())
    assert await call("gettxout", txid, 0) is None  # spent in the mempool
    assert (await call("gettxout", txid, 0, False))["confirmations"] == 1
    child = display_hex(txid_of(raw))
    assert (await call("gettxout", child, 0))["confirmations"] == 0
    assert await call("gettxout", child, 0, False) is None
    harness.inner.mine(1)
    assert await call("gettxout", txid, 0, False) is None


@pytest_twisted.ensureDeferred
async def test_gettxspendingprevout(harness: Harness) -> None:
    call = harness.connection.call
    coin = funded(harness)
    point = {"txid": display_hex(coin.outpoint.txid), "vout": 0}
    assert await call("gettxspendingprevout", [point]) == [point]
    raw = pay_bob(coin)
    await call("sendrawtransaction", raw.hex())
    assert await call("gettxspendingprevout", [point]) == [{**point, "spendingtxid": display_hex(txid_of(raw))}]


@pytest_twisted.ensureDeferred
async def test_getrawmempool(harness: Harness) -> None:
    call = harness.connection.call
    assert await call("getrawmempool") == []
    coin = funded(harness)
    parent = spend([coin], [(BOB.p2pkh, coin.value - 1_000)])
    child = spend([Coin(OutPoint(txid_of(parent), 0), coin.value - 1_000, BOB)], [(ALICE.p2pkh, coin.value - 2_000)])
    for raw in (parent, child):
        await call("sendrawtransaction", raw.hex())
    p, c = display_hex(txid_of(parent)), display_hex(txid_of(child))
    assert await call("getrawmempool") == [p, c]
    verbose = await call("getrawmempool", True)
    assert verbose[c]["depends"] == [p] and verbose[p]["spentby"] == [c]
    assert verbose[c]["ancestorcount"] == 2 and verbose[p]["descendantcount"] == 2
    assert verbose[p]["fees"]["base"] == Decimal("0.00001000")
    assert verbose[p]["fees"]["descendant"] == Decimal("0.00002000")
    seq = await call("getrawmempool", False, True)
    assert seq["txids"] == [p, c] and isinstance(seq["mempool_sequence"], int)
    assert (await error_of(harness, "getrawmempool", True, True))[0] == -8


@pytest_twisted.ensureDeferred
async def test_scantxoutset(harness: Harness) -> None:
    call = harness.connection.call
    coin = funded(harness)
    address = script_to_address(ALICE.p2pkh, REGTEST)
    for descriptor in (f"addr({address})", with_checksum(f"addr({address})"), f"raw({ALICE.p2pkh.hex()})", {"desc": f"raw({ALICE.p2pkh.hex()})"}):
        result = await call("scantxoutset", "start", [descriptor])
        assert result["success"] is True
        assert result["height"] == harness.node.height
        [unspent] = result["unspents"]
        assert (unspent["txid"], unspent["vout"]) == (display_hex(coin.outpoint.txid), 0)
        assert unspent["amount"] == Decimal("0.00100000") == result["total_amount"]
        assert unspent["height"] == harness.node.height and unspent["coinbase"] is False
        assert unspent["desc"] == with_checksum(f"addr({address})")
        assert unspent["scriptPubKey"] == ALICE.p2pkh.hex()
    coinbases = await call("scantxoutset", "start", [f"raw({ANYONE_CAN_SPEND.hex()})"])
    assert any(u["coinbase"] for u in coinbases["unspents"])
    code, message = await error_of(harness, "scantxoutset", "start", [f"addr({address})#qqqqqqqq"])
    assert code == -5 and "does not match computed checksum" in message
    assert (await error_of(harness, "scantxoutset", "start", ["addr(notanaddress)"]))[0] == -5
    assert (await error_of(harness, "scantxoutset", "start", [f"wpkh({ALICE.pub.hex()})"]))[0] == -5
    assert (await error_of(harness, "scantxoutset", "start"))[0] == -8
    assert await call("scantxoutset", "status") is None
    assert await call("scantxoutset", "abort") is False
    assert (await error_of(harness, "scantxoutset", "bogus"))[0] == -8


@pytest_twisted.ensureDeferred
async def test_generate_and_submit(harness: Harness) -> None:
    call = harness.connection.call
    address = script_to_address(ALICE.p2wpkh, REGTEST)
    before = harness.node.height
    hashes = await call("generatetoaddress", 2, address)
    assert len(hashes) == 2 and harness.node.height == before + 2
    block = await call("getblock", hashes[-1], 2)
    assert block["tx"][0]["vout"][0]["scriptPubKey"]["address"] == address
    assert await error_of(harness, "generatetoaddress", 1, "bc1qnotregtest") == (-5, "Error: Invalid address")
    [h] = await call("generatetodescriptor", 1, f"raw({ANYONE_CAN_SPEND.hex()})")
    assert await call("getbestblockhash") == h
    assert await call("submitblock", await call("getblock", h, 0)) == "duplicate"
    assert (await error_of(harness, "submitblock", "00"))[0] == -22


@pytest_twisted.ensureDeferred
async def test_estimatesmartfee(harness: Harness) -> None:
    call = harness.connection.call
    assert await call("estimatesmartfee", 6) == {"feerate": Decimal("0.00002500"), "blocks": 6}
    assert (await call("estimatesmartfee", 1, "CONSERVATIVE"))["blocks"] == 2
    assert await error_of(harness, "estimatesmartfee", 0) == (-8, "Invalid conf_target, must be between 1 and 1008")
    assert (await error_of(harness, "estimatesmartfee", 6, "fast"))[0] == -8
    # A node configured without a rate answers as a fresh Core node does.
    assert NodeMethods(harness.node).dispatch("estimatesmartfee", [6]) == {
        "errors": ["Insufficient data or no feerate found"],
        "blocks": 0,
    }


@pytest_twisted.ensureDeferred
async def test_unknown_methods_and_help(harness: Harness) -> None:
    call = harness.connection.call
    assert await error_of(harness, "nosuchmethod") == (-32601, "Method not found")
    assert "getblockhash height" in await call("help")
    assert await call("help", "getblockhash") == "getblockhash height"
    assert isinstance(await call("uptime"), int)


def test_named_parameters(harness: Harness) -> None:
    methods = NodeMethods(harness.node)
    assert methods.dispatch("getblockhash", {"height": 0}) == GENESIS
    assert methods.dispatch("getblockheader", {"blockhash": GENESIS, "verbose": False}) == harness.node.header(
        harness.node.block_hash_at(0)
    ).hex()
    with pytest.raises(RpcError) as caught:
        methods.dispatch("getblockhash", {"heigth": 0})
    assert (caught.value.code, caught.value.message) == (-8, "Unknown named parameter heigth")
    with pytest.raises(RpcError) as caught:
        methods.dispatch("getblockhash", [0, 1])
    assert caught.value.code == -1 and caught.value.message == "getblockhash height"


@pytest_twisted.ensureDeferred
async def test_getblock_coinbase_tx_as_core_31(harness: Harness) -> None:
    call = harness.connection.call
    [block_hash] = harness.inner.mine(1)  # an empty block: Core's miner commits to witnesses all the same
    one = await call("getblock", display_hex(block_hash))
    coinbase = one["coinbase_tx"]
    assert list(coinbase) == ["version", "locktime", "sequence", "coinbase", "witness"]
    height = harness.node.height  # Core 30+: locked to the height below, lock time enabled
    assert (coinbase["version"], coinbase["locktime"], coinbase["sequence"]) == (2, height - 1, 0xFFFFFFFE)
    assert coinbase["witness"] == "00" * 32  # the reserved value
    two = await call("getblock", display_hex(block_hash), 2)
    assert two["coinbase_tx"] == coinbase
    assert two["tx"][0]["vin"][0]["coinbase"] == coinbase["coinbase"]
    assert two["tx"][0]["vin"][0]["txinwitness"] == ["00" * 32]


@pytest_twisted.ensureDeferred
async def test_getmempoolentry_and_chunks(harness: Harness) -> None:
    call = harness.connection.call
    coin = funded(harness)
    parent = spend([coin], [(BOB.p2pkh, coin.value - 200)])  # 200 sat: below its child's rate
    child = spend([Coin(OutPoint(txid_of(parent), 0), coin.value - 200, BOB)], [(ALICE.p2pkh, coin.value - 5_200)])
    alone = pay_bob(funded(harness), fee=1_000)
    for raw in (parent, child, alone):
        await call("sendrawtransaction", raw.hex())
    p, c, a = (display_hex(txid_of(raw)) for raw in (parent, child, alone))
    entry = await call("getmempoolentry", c)
    assert list(entry) == ["vsize", "weight", "time", "height", "descendantcount", "descendantsize", "ancestorcount",
                           "ancestorsize", "chunkweight", "wtxid", "fees", "depends", "spentby", "bip125-replaceable",
                           "unbroadcast"]
    assert list(entry["fees"]) == ["base", "modified", "ancestor", "descendant", "chunk"]
    verbose = await call("getrawmempool", True)
    assert verbose[c] == entry
    # The child pays for its parent: one chunk of both. The other is a chunk of its own.
    both = verbose[p]["weight"] + verbose[c]["weight"]
    assert verbose[p]["chunkweight"] == verbose[c]["chunkweight"] == both
    assert verbose[p]["fees"]["chunk"] == verbose[c]["fees"]["chunk"] == Decimal("0.00005200")
    assert (verbose[a]["chunkweight"], verbose[a]["fees"]["chunk"]) == (verbose[a]["weight"], Decimal("0.00001000"))
    assert await error_of(harness, "getmempoolentry", "00" * 32) == (-5, "Transaction not in mempool")
