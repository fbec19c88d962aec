"""
``doc/states.md``, generated from the lifecycle tables themselves so that the page cannot drift
from the code: ``python -m twisted_paychan.channel.diagrams`` writes it (``make diagrams``), and
a test fails when the page in ``doc/`` is not what the tables say.

For each side: a state diagram (Mermaid ``stateDiagram-v2``, which GitHub and most Markdown
viewers draw) whose edges are labelled with the events that take them, then the table row by
row for readers without a renderer. The edges are exactly the store's
(``channel.states``): tests hold each lifecycle table's writes equal to them.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Iterable

from twisted_paychan.channel import client_lifecycle, server_lifecycle
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState

#: (from, label, to), in table order.
Edge = tuple[enum.Enum, str, enum.Enum]

HEADER = """# Channel states

Generated from the lifecycle tables by `python -m twisted_paychan.channel.diagrams`
(`make diagrams`); do not edit by hand: a test compares this page with the code.

Each side's stored channel moves only along these edges. The lifecycle machine
(`channel/server_lifecycle.py`, `channel/client_lifecycle.py`) decides, one row per stored
state and event; every store refuses any other change by compare-and-set
(`channel/states.py`).

Two questions this page answers:

- *Who settles a channel before expiry?* Server, `open` + `SettleDue`: the server's own timer,
  armed for `expiry - settle_offset` whenever the channel is stored or loaded.
- *What happens to a channel whose contract is double-spent?* Server, `open` +
  `ContractInputSpent`: `contract-failed`; the store refuses every payment from then on.
- *What if the server's node is down when a contract arrives?* Server, `open` +
  `ContractUnsent`: the channel stays `open` (not resumable) and the contract is broadcast
  again every `contract_retry_interval`; only a node's refusal (`BroadcastRefused`: the client
  took its coins back) makes it `contract-failed`.
"""


def _merged(edges: Iterable[Edge]) -> list[Edge]:
    """One edge per (from, to), its label every event that takes it, in first-seen order."""
    labels: dict[tuple[enum.Enum, enum.Enum], list[str]] = {}
    for old, label, new in edges:
        names = labels.setdefault((old, new), [])
        if label not in names:
            names.append(label)
    return [(old, ", ".join(names), new) for (old, new), names in labels.items()]


def mermaid(initial: enum.Enum, finals: Iterable[enum.Enum], edges: Iterable[Edge]) -> list[str]:
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {initial.name}"]
    lines += [f"    {old.name} --> {new.name} : {label}" for old, label, new in _merged(edges)]
    lines += [f"    {final.name} --> [*]" for final in finals]
    return lines + ["```", ""]


def server_edges() -> list[Edge]:
    return [(state, event.__name__, new)
            for (state, event), rule in server_lifecycle.LIFECYCLE_TABLE.items()
            for new in sorted(rule.writes, key=list(ServerChannelState).index)]


def server_rows() -> list[str]:
    rows = ["| state | event | what happens | may write |", "|---|---|---|---|"]
    for (state, event), rule in server_lifecycle.LIFECYCLE_TABLE.items():
        doc = (rule.handler.__doc__ or "").strip().split("\n\n")[0]
        writes = ", ".join(s.value for s in sorted(rule.writes, key=list(ServerChannelState).index)) or "-"
        rows.append(f"| {state.value} | `{event.__name__}` | {' '.join(doc.split())} | {writes} |")
    return rows + [""]


def client_edges() -> list[Edge]:
    return [(state, trigger.value, new) for (state, trigger), new in client_lifecycle.LIFECYCLE.items()]


def client_rows() -> list[str]:
    rows = ["| state | event | becomes |", "|---|---|---|"]
    rows += [f"| {state.value} | {trigger.value} | {new.value} |"
             for (state, trigger), new in client_lifecycle.LIFECYCLE.items()]
    return rows + [""]


def page() -> str:
    """The whole of ``doc/states.md``."""
    S, C = ServerChannelState, ClientChannelState
    parts = [
        HEADER,
        "## Server channel",
        "",
        *mermaid(S.OPEN, [S.SETTLED, S.REFUNDED], server_edges()),
        "An event without a row in a state changes nothing; a settlement request there is",
        "answered \"the channel is <state>\".",
        "",
        *server_rows(),
        "## Client channel",
        "",
        *mermaid(C.OPEN, [C.REFUNDED], client_edges()),
        "A pair not listed changes nothing (a late or repeated event).",
        "",
        *client_rows(),
    ]
    return "\n".join(parts)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("doc/states.md")
    target.write_text(page())


if __name__ == "__main__":
    main()
