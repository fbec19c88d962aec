"""
Restoring a wallet from its words: find, on the chain, every key of the seed that holds coins.

A restored wallet starts with the seed and no keys. :func:`find_coins` derives the first
``window`` keys of each scanned branch of the seed's tree (receive, legacy receive, payout) and
asks the chain for the unspent outputs of all their scripts, and of the tracked channel keys',
in ONE scan (``IChain.scan_outputs``: one ``scantxoutset`` on Bitcoin Core, which reads the
whole UTXO set however many scripts it looks for). It keeps every key of a branch up to the
last one in use, so new keys continue after it; only when a coin sits within ``gap`` keys
(BIP44's gap limit, 20) of the window's end does it scan again, with the windows of those
branches doubled. A server's payout branch has a key per settlement: the default window of
1,000 finds a thousand settlements' coins in the first scan. The scan is the wallet's one full
scan: it follows the chain from the scan's block on (``wallet.follow``).

Channel keys are found by name, not by coins: the channel store names each channel's key, and
the walk of the channel branch goes on until every named key is found or ``channel_gap`` keys in
a row match none (handshakes that never became channels leave holes there). A client's channel
keys are tracked, so the change and refunds they received are coins again.

The chain only reports *unspent* outputs, so "in use" means "holds a coin now": a key whose
coins were all spent is kept only if a later key of its branch is in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Iterable, Optional

from twisted_paychan.chain.interfaces import IChain
from twisted_paychan.chain.types import OutputScan
from twisted_paychan.wallet.base import BaseWallet
from twisted_paychan.wallet.hd import Branch
from twisted_paychan.wallet.keys import KeyPurpose, ScriptType, WalletKey

__all__ = ["ChannelKey", "RestoreReport", "find_coins", "GAP_LIMIT", "CHANNEL_GAP_LIMIT", "WINDOW"]

#: BIP44's gap limit: unused keys in a row after which a branch is taken to end.
GAP_LIMIT: Final = 20
#: Channel keys in a row that no stored channel names before the walk gives up on the rest.
CHANNEL_GAP_LIMIT: Final = 1000
#: Keys of each scanned branch looked for in the first scan.
WINDOW: Final = 1000

_SCANNED: Final = (
    (Branch.RECEIVE, KeyPurpose.RECEIVE, ScriptType.P2WPKH),
    (Branch.RECEIVE_LEGACY, KeyPurpose.RECEIVE, ScriptType.P2PKH),
    (Branch.PAYOUT, KeyPurpose.PAYOUT, ScriptType.P2WPKH),
)


@dataclass(frozen=True)
class ChannelKey:
    """A channel key the channel store names; ``tracked`` for a client's (its payouts are ours)."""

    public_key: bytes
    tracked: bool


@dataclass
class RestoreReport:
    #: Keys kept per branch (the receive, legacy, payout and channel ones found).
    keys: dict[str, int] = field(default_factory=dict)
    #: Unspent outputs found, and what they are worth.
    coins: int = 0
    value: int = 0
    #: Channel keys the store names that the seed does not derive within the gap limit.
    missing_channel_keys: list[bytes] = field(default_factory=list)
    #: Scans of the chain it took (one unless a branch was in use near its window's end).
    scans: int = 0


async def find_coins(
    wallet: BaseWallet,
    chain: IChain,
    channel_keys: Iterable[ChannelKey] = (),
    gap: int = GAP_LIMIT,
    channel_gap: int = CHANNEL_GAP_LIMIT,
    window: int = WINDOW,
) -> RestoreReport:
    """Adopt into ``wallet`` (which must have a seed) every key of its seed in use; see the
    module docstring. The wallet's coins are then the scan's, and it follows on from there."""
    report = RestoreReport()
    report.keys["channel"], report.missing_channel_keys = _find_channel_keys(wallet, channel_keys, channel_gap)
    windows = {branch: max(window, gap + 1) for branch, _, _ in _SCANNED}
    derived: dict[Branch, list[WalletKey]] = {branch: [] for branch, _, _ in _SCANNED}
    while True:
        for branch, purpose, script_type in _SCANNED:
            keys = derived[branch]
            keys.extend(wallet.derive(branch, i, purpose, script_type) for i in range(len(keys), windows[branch]))
        index_of = {_script(k): (branch, i) for branch, keys in derived.items() for i, k in enumerate(keys)}
        scan: OutputScan = await chain.scan_outputs([*index_of, *wallet.scanned_scripts()])
        report.scans += 1
        last_used = {branch: -1 for branch in derived}
        for utxo in scan.utxos:
            found = index_of.get(utxo.script_pubkey)
            if found is not None:
                last_used[found[0]] = max(last_used[found[0]], found[1])
        short = [b for b in derived if last_used[b] + gap >= windows[b]]
        if not short:
            break
        for branch in short:
            windows[branch] *= 2
    for branch, keys in derived.items():
        for key in keys[: last_used[branch] + 1]:
            wallet.adopt_key(key)
        report.keys[branch.name.lower()] = last_used[branch] + 1
    walked = [u for u in scan.utxos if u.script_pubkey in index_of]
    report.coins, report.value = len(walked), sum(u.value for u in walked)
    mine = [u for u in scan.utxos if wallet.is_mine(u.script_pubkey)]
    wallet.adopt_scan(OutputScan(mine, scan.tip))
    return report


def _find_channel_keys(
    wallet: BaseWallet, wanted_keys: Iterable[ChannelKey], channel_gap: int
) -> tuple[int, list[bytes]]:
    wanted = {bytes(k.public_key): k.tracked for k in wanted_keys}
    found = 0
    index, last_hit = 0, -1
    while wanted and index <= last_hit + channel_gap:
        key = wallet.derive(Branch.CHANNEL, index, KeyPurpose.CHANNEL, None)
        tracked: Optional[bool] = wanted.pop(key.public_key, None)
        if tracked is not None:
            last_hit = index
            found += 1
            wallet.adopt_key(key if not tracked else wallet.derive(
                Branch.CHANNEL, index, KeyPurpose.CHANNEL, ScriptType.P2PKH))
        index += 1
    return found, sorted(wanted)


def _script(key: WalletKey) -> bytes:
    assert key.script_pubkey is not None
    return key.script_pubkey
