"""``paychan channels``: the state filter and the counts by state (issue #14 item 3: a server may
hold many contract-failed channels until they are pruned)."""

from __future__ import annotations

from pathlib import Path


from cli_helpers import ok, paychan
from twisted_paychan.channel.records import ServerChannelRecord, ServerChannelState
from twisted_paychan.store.sqlite import open_store

S = ServerChannelState


def fill(data_dir: Path, states: list[ServerChannelState]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(str(data_dir))
    done = []
    for n, state in enumerate(states, 1):
        record = ServerChannelRecord(contract_txid=bytes([n]) * 32, version=2, contract=b"\x01" * 64,
                                     value=1_000_000, expiry=1_800_000_000, server_key=b"\x02" * 33,
                                     client_key=b"\x03" * 33, best_value=1000, best_signature=b"s", state=state)
        store.add_server_channel(record).addCallback(done.append)
    store.close().addCallback(done.append)
    assert len(done) == len(states) + 1  # the inline store writes at once


def test_counts_by_state_and_the_filter(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill(data_dir, [S.OPEN, S.CONTRACT_FAILED, S.CONTRACT_FAILED, S.CONTRACT_FAILED])
    every = ok("channels", "--data-dir", str(data_dir)).stdout.splitlines()
    assert every[0] == "4 channel(s)"
    assert every[1] == "by state: server contract-failed 3, open 1"
    opened = ok("channels", "--data-dir", str(data_dir), "--state", "open").stdout.splitlines()
    assert opened[0] == "1 channel(s) open, of 4"
    assert opened[1] == every[1]
    assert len([line for line in opened if line.startswith("server ")]) == 1
    assert "open" in [line.split()[3] for line in opened if line.startswith("server ")]
    counted = ok("channels", "--data-dir", str(data_dir), "--count").stdout.splitlines()
    assert counted == every[:2]
    js = ok("channels", "--data-dir", str(data_dir), "--json", "--state", "contract-failed").json
    assert js["counts"] == {"server": {"contract-failed": 3, "open": 1}}
    assert [r["state"] for r in js["channels"]] == ["contract-failed"] * 3


def test_an_unknown_state_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill(data_dir, [S.OPEN])
    result = paychan("channels", "--data-dir", str(data_dir), "--state", "bogus")
    assert result.code != 0 and "Traceback" not in result.stderr
