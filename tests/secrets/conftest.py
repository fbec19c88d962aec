import sys
from pathlib import Path

# cli_helpers (paychan in-process) lives with the CLI tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
