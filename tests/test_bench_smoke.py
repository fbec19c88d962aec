"""The benchmarks still run (with tiny sizes). Their figures are not checked here: speed is
measured by running them in full (doc/performance.md), never asserted in tests."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script, args", [
    ("bench_sync_floor.py", ["--rounds", "50"]),
    ("bench_hotpath.py", ["--payments", "1000", "--rounds", "1"]),
    ("bench_restart.py", ["--channels", "20"]),
    ("bench_payments.py", ["--payments", "40", "--channels", "2", "--idle", "20", "--floor-rounds", "100"]),
    ("bench_payments.py", ["--payments", "40", "--channels", "2", "--idle", "2", "--api", "scrape",
                           "--floor-rounds", "100"]),
    ("bench_hotpath.py", ["--payments", "1000", "--rounds", "1", "--api"]),
    ("bench_api_hooks.py", ["--payments", "1000", "--rounds", "1"]),
    ("bench_signer.py", ["--count", "5"]),
    ("bench_many.py", ["--channels", "6", "--duration", "2", "--generators", "2", "--open-concurrency", "2"]),
    ("bench_wallet_block.py", ["--coins", "1000", "--blocks", "2", "--settlements", "2"]),
    ("bench_months.py", ["--rounds", "3", "--channels", "4", "--blocks", "2", "--concurrency", "2",
                         "--open-many", "12", "--open-batch", "4"]),
    ("bench_cluster.py", ["--channels", "4", "--payments", "20", "--runs", "2"]),
    ("bench_opens.py", ["--few", "2", "--many", "6", "--batch", "2", "--runs", "2"]),
])
def test_bench_runs(script, args):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "a benchmark prints its figures"
