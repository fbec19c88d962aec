import sys
from pathlib import Path

# signer_setup (a signer in the test process, for the signer: backend) lives with the signer's tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "signer"))
