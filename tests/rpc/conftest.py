import sys
from pathlib import Path

# The rpc tests reuse the chain tests' helpers (chain_txs, chain_backends, chain_conformance).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chain"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
