"""
``paychan regtest-fund`` and ``paychan regtest-mine``: coins and blocks on demand, on a regtest
node (embedded in-process, or any regtest bitcoind over RPC).

``regtest-fund ADDRESS SATS`` mines blocks to a throwaway key until their coinbases cover SATS
plus the fee (one block unless SATS exceeds the block subsidy, which halves every 150 regtest
blocks), mines 99 more so the last of them is mature for the next block, spends them to ADDRESS
(``regtest_tx``), broadcasts that, and mines one block to confirm it.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from twisted_paychan.bitcoin.addresses import AddressError, address_to_script, script_to_address
from twisted_paychan.bitcoin.policy import dust_threshold
from twisted_paychan.chain.types import OutPoint, display_hex, from_display_hex
from twisted_paychan.cli.chains import ChainAccess, open_chain, rpc_login
from twisted_paychan.cli.errors import check_fee_rate
from twisted_paychan.cli.output import Output, UserError, format_sat
from twisted_paychan.cli.regtest_tx import KeyCoin, ThrowawayKey, build_funding_tx, estimate_fee
from twisted_paychan.constants import COINBASE_MATURITY, MAX_MONEY
from twisted_paychan.rpc.errors import RpcError
from twisted_paychan.rpc.jsonenc import btc, sat

#: More coinbases than this for one funding means the request is unreasonable for regtest.
MAX_COINBASES: Final = 200


async def _regtest(access: ChainAccess, command: str) -> None:
    if access.chain_name != "regtest":
        raise UserError(f"{command} only works on regtest; {access.description} is on {access.chain_name}")


async def _coinbase(access: ChainAccess, block_hex: str) -> KeyCoin:
    block = await access.call("getblock", block_hex, 2)
    coinbase = block["tx"][0]
    return KeyCoin(OutPoint(from_display_hex(coinbase["txid"]), 0), sat(coinbase["vout"][0]["value"]))


async def run_fund(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    amount = args.sats
    if not 0 < amount <= MAX_MONEY:
        raise UserError(f"SATS must be between 1 and {MAX_MONEY}, got {amount}")
    check_fee_rate(args.fee_rate)
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        await _regtest(access, "regtest-fund")
        try:
            script = address_to_script(args.address, access.network)
        except AddressError as e:
            raise UserError(f"{args.address!r} is not a regtest address: {e}") from None
        if amount < dust_threshold(script):
            raise UserError(f"{amount} sat is below the dust limit ({dust_threshold(script)} sat) for that address")
        key = ThrowawayKey()
        key_address = script_to_address(key.script_pubkey, access.network)
        coins: list[KeyCoin] = []
        while sum(c.value for c in coins) < amount + estimate_fee(len(coins) + 1, [script, key.script_pubkey], args.fee_rate):
            if len(coins) >= MAX_COINBASES:
                raise UserError(f"{format_sat(amount)} needs more than {MAX_COINBASES} block rewards at this height")
            [block_hex] = await access.call("generatetoaddress", 1, key_address)
            coin = await _coinbase(access, block_hex)
            if coin.value == 0:
                raise UserError("the regtest block subsidy is exhausted at this height; start a fresh node")
            coins.append(coin)
        await access.call("generatetoaddress", COINBASE_MATURITY - 1, key_address)
        funding = build_funding_tx(key, coins, script, amount, args.fee_rate)
        try:
            txid = from_display_hex(await access.call("sendrawtransaction", funding.raw.hex()))
        except RpcError as e:
            raise UserError(f"{access.description} refused the funding transaction: {e.message} (code {e.code})") from None
        [block_hex] = await access.call("generatetoaddress", 1, key_address)
        height = (await access.call("getblockheader", block_hex, True))["height"]
    finally:
        await access.close()
    outpoint = f"{display_hex(txid)}:{funding.vout}"
    out.emit(
        "\n".join(
            [
                f"funded {args.address} with {format_sat(amount)}",
                f"outpoint: {outpoint}",
                f"confirmed in block {height} ({block_hex})",
                f"fee: {format_sat(funding.fee)}",
                f"tx: {funding.raw.hex()}",
            ]
        ),
        {
            "address": args.address,
            "amount": amount,
            "amount_btc": btc(amount),
            "txid": display_hex(txid),
            "vout": funding.vout,
            "outpoint": outpoint,
            "fee": funding.fee,
            "hex": funding.raw.hex(),
            "blockhash": block_hex,
            "height": height,
        },
    )
    return 0


async def run_mine(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.blocks < 0:
        raise UserError("N must not be negative")
    access = await open_chain(reactor, args.chain, args.data_dir, args.rpc_cookie, rpc_login(args))
    try:
        await _regtest(access, "regtest-mine")
        if args.address is None:
            from twisted_paychan.chain.embedded.node import ANYONE_CAN_SPEND

            address = script_to_address(ANYONE_CAN_SPEND, access.network)
        else:
            address = args.address
            try:
                address_to_script(address, access.network)
            except AddressError as e:
                raise UserError(f"{address!r} is not a regtest address: {e}") from None
        hashes = await access.call("generatetoaddress", args.blocks, address)
        height = await access.call("getblockcount")
    finally:
        await access.close()
    out.emit(
        f"mined {len(hashes)} block(s) to {address}; the tip is now at height {height}",
        {"blocks": hashes, "height": height, "address": address},
    )
    return 0
