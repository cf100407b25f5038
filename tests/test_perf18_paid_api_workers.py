"""``benchmarks/paid_api.py --workers 2`` (issue 18): two server processes on one listening socket
share a Redis store; every paid call is served (none refused), CPU per call is reported for the
server workers, the store and wrk, and the memory store is skipped (it cannot be shared)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_workers_share_the_redis_store_and_serve_every_paid_call() -> None:
    assert shutil.which("wrk"), "wrk is needed (Debian: apt-get install wrk)"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "paid_api", "--load", "wrk", "--windows", "2",
         "--seconds", "1", "--l402-calls", "1", "--stores", "memory,redis", "--workers", "2",
         "--memory-allowances", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "memory store is skipped" in done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["workers"] == 2 and "memory" not in doc
    redis = doc["redis"]
    assert redis["failed"] == 0
    assert redis["wrk"]["paid"] > 0 and redis["wrk"]["unpaid"] > 0
    cpu = redis["wrk"]["cpu_us"]
    assert cpu["paid_server"] > 0 and cpu["paid_store"] > 0 and cpu["paid_load"] > 0
