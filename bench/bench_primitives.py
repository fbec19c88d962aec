"""
Figures for the Bitcoin primitives on the paths that run per payment or per settlement.

- per payment, server side: the fast payment sighash plus libsecp256k1's verify
  (``verify_payment_signature``, the whole §7.3 signature check). Target: under 50 µs.
- per payment, client side: ``sign_payment``.
- per settlement/refund: Bitcoin Core's script check (py-bitcoinkernel) of a 2-of-2 input, v1
  bare multisig and v2 P2SH; once with the kernel's parsed objects reused (the floor), once
  through ``consensus.verify_input_consensus`` / ``verify_input`` from bytes, as our code calls
  it. Target: a kernel check under 100 µs.

Each figure is the best of several timing runs (least disturbed by other processes), with the
median beside it. Run: ``.venv/bin/python bench/bench_primitives.py``.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import timeit
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pbk  # noqa: E402  (the raw kernel, only to time it with reused objects)

from twisted_paychan.bitcoin import consensus  # noqa: E402
from twisted_paychan.bitcoin.keys import KeySigner  # noqa: E402
from twisted_paychan.bitcoin.payment import payment_digest, sign_payment, verify_payment_signature  # noqa: E402
from twisted_paychan.bitcoin.scripts import ChannelScript, p2pkh_script  # noqa: E402
from twisted_paychan.bitcoin.settlement import build_settlement  # noqa: E402

CLIENT = KeySigner(hashlib.sha256(b"bench client").digest())
SERVER = KeySigner(hashlib.sha256(b"bench server").digest())
PAYOUT = p2pkh_script(KeySigner(hashlib.sha256(b"bench payout").digest()).public_key)
CONTRACT_TXID = hashlib.sha256(b"bench contract").digest()
VALUE = 1_000_000
E = 1_800_000_000


def measure(label: str, fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    runs = [t / number for t in timeit.repeat(fn, number=number, repeat=repeat)]
    best, median = min(runs), statistics.median(runs)
    print(f"  {label:<58} {best * 1e6:8.1f} µs  {1 / best:10,.0f} /s   (median {median * 1e6:.1f} µs)")
    return best


def main() -> None:
    print(f"Python {sys.version.split()[0]}; best of 7 runs")
    for version in (1, 2):
        channel = ChannelScript(version, CLIENT.public_key, SERVER.public_key, E)
        c = 994_000
        signature = sign_payment(CLIENT, channel, CONTRACT_TXID, c)
        print(f"\nv{version} ({'bare 2-of-2 multisig' if version == 1 else 'P2SH CLTV'}), per payment")
        measure("payment sighash, fast path", lambda: payment_digest(channel, CONTRACT_TXID, c), 50_000)
        verify = measure(
            "server check: sighash + DER/low-S/flags + verify",
            lambda: verify_payment_signature(channel, CONTRACT_TXID, c, signature),
            5_000,
        )
        measure("client: sighash + sign (RFC 6979)", lambda: sign_payment(CLIENT, channel, CONTRACT_TXID, c), 5_000)
        print(f"  -> payment check target < 50 µs: {'met' if verify < 50e-6 else 'NOT met'}")

        settlement = build_settlement(channel, CONTRACT_TXID, VALUE, c, signature, SERVER, PAYOUT, 1000)
        raw, spk = settlement.raw, channel.script_pubkey
        flags = pbk.ScriptVerificationFlags(int(consensus.STANDARD_FLAGS))
        kernel_spk, kernel_tx = pbk.ScriptPubkey(spk), pbk.Transaction(raw)
        print(f"v{version} settlement input ({settlement.size} bytes), Bitcoin Core script check")
        floor = measure(
            "kernel, ScriptPubkey/Transaction objects reused",
            lambda: kernel_spk.verify(VALUE, kernel_tx, None, 0, flags),
            1_000,
        )
        measure(
            "kernel, parsing script and tx each time",
            lambda: pbk.ScriptPubkey(spk).verify(VALUE, pbk.Transaction(raw), None, 0, flags),
            1_000,
        )
        measure(
            "consensus.verify_input_consensus (args checked)",
            lambda: consensus.verify_input_consensus(raw, 0, spk, VALUE),
            1_000,
        )
        measure(
            "consensus.verify_input (+ relay signature policy)",
            lambda: consensus.verify_input(raw, 0, spk, VALUE),
            1_000,
        )
        print(f"  -> kernel check target < 100 µs: {'met' if floor < 100e-6 else 'NOT met'}")


if __name__ == "__main__":
    main()
