"""Child for the crash test: mine blocks one by one, printing each height once mine() returned."""

import sys

from twisted.internet import task

from twisted_paychan.chain.embedded.node import RegtestNode

clock = task.Clock()
clock.advance(1_700_000_000)
node = RegtestNode(sys.argv[1], clock)
while True:
    clock.advance(600)
    node.generate(1)
    print(node.height, flush=True)
