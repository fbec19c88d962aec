"""
When a settlement the chain does not show is offered to the node again.

A settlement normally sits in the node's mempool until a block takes it; the channel's contract
output watch says so, and then nothing is sent again. Only while that watch shows no spend (the
node refused it for now, dropped it at a restart, evicted it) is the settlement offered again,
at the next block, then after 2, 4, ... blocks, at most every :data:`MAX_GAP` blocks: a node that
keeps refusing it is not asked on every block for ever, and one that lost it hears again at the
next block (``reset``, when the watch sees the spend vanish).
"""

from __future__ import annotations

#: The longest wait between two offers, in blocks (about half a day on mainnet).
MAX_GAP = 64


class RebroadcastSchedule:
    """The next height at which to offer a settlement again, and the gap after it."""

    __slots__ = ("next_height", "gap")

    def __init__(self) -> None:
        self.next_height = 0
        self.gap = 1

    def due(self, height: int) -> bool:
        """Whether to offer it at this block; if so, the next offer is a longer gap away."""
        if height < self.next_height:
            return False
        self.next_height = height + self.gap
        self.gap = min(self.gap * 2, MAX_GAP)
        return True

    def reset(self) -> None:
        self.next_height = 0
        self.gap = 1
