"""SIGKILL the embedded node while it mines: reopened, it is at least at the last height it
reported (the kernel alone may forget unflushed blocks; the node's journal gives them back)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.internet import task

from twisted_paychan.chain.embedded.node import RegtestNode


def test_node_killed_while_mining_keeps_every_reported_block(tmp_path):
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "node_crash_child.py"), str(tmp_path / "node")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    reported = 0
    for line in child.stdout:
        reported = int(line)
        if reported >= 150:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    clock = task.Clock()
    clock.advance(1_700_000_000 + 600 * 200)
    node = RegtestNode(tmp_path / "node", clock)
    try:
        assert node.height >= reported
        assert node.tip().height == node.height
    finally:
        node.close()
