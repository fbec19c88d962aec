"""
``python -m twisted_paychan.channel.lifecycle_doc``: write ``doc/server-lifecycle.md``, the
server lifecycle's table (``channel.server_lifecycle.LIFECYCLE_TABLE``) as a reader sees it. A
test compares the file with what this makes, so the document cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted_paychan.channel.server_lifecycle import LIFECYCLE_TABLE

HEADER = """# The server lifecycle, row by row

Generated from `twisted_paychan/channel/server_lifecycle.py` (`LIFECYCLE_TABLE`) by
`python -m twisted_paychan.channel.lifecycle_doc`; do not edit by hand.

Each row is a stored state and an event; the machine's handler decides, and may write only the
states listed (its edges are `channel.states.SERVER_TRANSITIONS`, exactly). An event without a
row in a state is ignored; a settlement request there is answered "the channel is <state>".

- *Who settles a channel before expiry?* `open` + `SettleDue`: the server's own timer, armed for
  `expiry - settle_offset`.
- *What happens when its contract is double-spent?* `open` + `ContractInputSpent`.

| state | event | what happens | may write |
|---|---|---|---|
"""


def render() -> str:
    rows = []
    for (state, event), rule in LIFECYCLE_TABLE.items():
        doc = (rule.handler.__doc__ or "").strip().split("\n\n")[0]
        what = " ".join(doc.split())
        writes = ", ".join(sorted(s.value for s in rule.writes)) or "-"
        rows.append(f"| {state.value} | `{event.__name__}` | {what} | {writes} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("doc/server-lifecycle.md")
    target.write_text(render())


if __name__ == "__main__":
    main()
