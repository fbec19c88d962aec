"""doc/states.md is generated from the lifecycle tables (``make diagrams``), so it cannot drift."""

from pathlib import Path

from twisted_paychan.channel import diagrams
from twisted_paychan.channel.records import ClientChannelState, ServerChannelState
from twisted_paychan.channel.states import CLIENT_TRANSITIONS, SERVER_TRANSITIONS

DOC = Path(__file__).resolve().parents[2] / "doc" / "states.md"


def test_the_page_in_doc_is_what_the_tables_say() -> None:
    assert DOC.read_text() == diagrams.page(), "run `make diagrams` and commit doc/states.md"


def test_every_store_edge_is_drawn_with_the_events_that_take_it() -> None:
    for edges, table in ((diagrams.server_edges(), SERVER_TRANSITIONS), (diagrams.client_edges(), CLIENT_TRANSITIONS)):
        drawn = {(old, new) for old, _, new in edges}
        assert drawn == {(old, new) for old, targets in table.items() for new in targets}
        assert all(label for _, label, _ in edges)


def test_the_diagram_names_each_state() -> None:
    page = diagrams.page()
    for state in (*ServerChannelState, *ClientChannelState):
        assert f"{state.name} -->" in page or f"--> {state.name}" in page
