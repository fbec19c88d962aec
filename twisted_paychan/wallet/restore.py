"""
Restoring a wallet from its words: find, on the chain, every key of the seed that holds coins.

A restored wallet starts with the seed and no keys. :func:`find_coins` walks each scanned branch
of the seed's tree (receive, legacy receive, payout) asking the chain for the unspent outputs of
each key's script, until ``gap`` keys in a row hold none (BIP44's gap limit, 20), and keeps every
key up to the last one in use, so new keys continue after it. Channel keys are found by name,
not by coins: the channel store names each channel's key, and the walk of the channel branch
goes on until every named key is found or ``channel_gap`` keys in a row match none (handshakes
that never became channels leave holes there). A client's channel keys are tracked, so the change
and refunds they received are coins again.

The chain only reports *unspent* outputs, so "in use" means "holds a coin now": a key whose
coins were all spent is kept only if a later key of its branch is in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Iterable, Optional

from twisted.internet import defer

from twisted_paychan.chain.interfaces import IChain
from twisted_paychan.chain.types import Utxo
from twisted_paychan.wallet.base import BaseWallet
from twisted_paychan.wallet.hd import Branch
from twisted_paychan.wallet.keys import KeyPurpose, ScriptType, WalletKey

__all__ = ["ChannelKey", "RestoreReport", "find_coins", "GAP_LIMIT", "CHANNEL_GAP_LIMIT"]

#: BIP44's gap limit: unused keys in a row after which a branch is taken to end.
GAP_LIMIT: Final = 20
#: Channel keys in a row that no stored channel names before the walk gives up on the rest.
CHANNEL_GAP_LIMIT: Final = 1000

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


async def find_coins(
    wallet: BaseWallet,
    chain: IChain,
    channel_keys: Iterable[ChannelKey] = (),
    gap: int = GAP_LIMIT,
    channel_gap: int = CHANNEL_GAP_LIMIT,
) -> RestoreReport:
    """Adopt into ``wallet`` (which must have a seed) every key of its seed in use; see the
    module docstring. Ends with a refresh, so the wallet's coins are the chain's."""
    report = RestoreReport()
    for branch, purpose, script_type in _SCANNED:
        kept = await _scan_branch(wallet, chain, branch, purpose, script_type, gap, report)
        report.keys[branch.name.lower()] = kept
    report.keys["channel"], report.missing_channel_keys = _find_channel_keys(wallet, channel_keys, channel_gap)
    await wallet.refresh()
    return report


async def _scan_branch(
    wallet: BaseWallet, chain: IChain, branch: Branch, purpose: KeyPurpose, script_type: ScriptType,
    gap: int, report: RestoreReport,
) -> int:
    keys: list[WalletKey] = []
    last_used = -1
    while len(keys) <= last_used + gap:
        # One window of queries at a time, all in flight together.
        window = [wallet.derive(branch, len(keys) + i, purpose, script_type) for i in range(gap)]
        answers: list[list[Utxo]] = await defer.gatherResults(
            [defer.maybeDeferred(chain.unspent_outputs, _script(k)) for k in window], consumeErrors=True
        )
        for key, utxos in zip(window, answers):
            if utxos:
                last_used = len(keys)
                report.coins += len(utxos)
                report.value += sum(u.value for u in utxos)
            keys.append(key)
    for key in keys[: last_used + 1]:
        wallet.adopt_key(key)
    return last_used + 1


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
