"""Smoke runs of the BOLT 8, BOLT 11 and onion benchmarks with tiny counts: they run, every side is there.

No timing is asserted (the suite must not depend on the machine's speed); what is
checked is the shape of the honest comparison: Electrum beside pyln-proto, wall
and CPU time, the load at start and end, a ratio per window for every peer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "transport": {
        "handshake, both sides": {"lightspeed", "pyln-proto", "electrum"},
        "64 B message, memory": {"lightspeed", "pyln-proto", "electrum", "AEAD floor"},
        "1024 B message, socket": {"lightspeed", "pyln-proto", "electrum", "AEAD floor"},
    },
    "bolt11": {
        "decode + signature check": {"lightspeed", "pyln-proto", "bolt11", "electrum", "floor: key recovery"},
        "encode + sign": {"lightspeed", "pyln-proto", "bolt11", "electrum", "floor: signing"},
    },
    "onion": {
        "build, 5 hops": {"lightspeed", "pyln-proto", "electrum"},
        "build, 20 hops": {"lightspeed", "pyln-proto", "electrum"},
        "peel one hop (parse + unwrap)": {"lightspeed", "pyln-proto", "electrum"},
    },
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_json_has_every_side_with_wall_cpu_and_load(name: str) -> None:
    done = _run(name, "--scale", "0.01", "--windows", "2", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["benchmark"] == name
    assert doc["windows"] == 2
    assert len(doc["machine"]["load_average"]) == 3 and len(doc["load_average_end"]) == 3
    assert doc["peers"]["electrum"] == "4.3.4"  # CI installs Debian's python3-electrum: it must be compared
    for operation, sides in EXPECTED[name].items():
        got = doc["results"][operation]
        assert sides <= set(got), (operation, set(got))
        for side, summary in got.items():
            assert summary["windows"] == 2
            assert summary["wall_us"]["min"] <= summary["wall_us"]["median"] <= summary["wall_us"]["max"]
            assert summary["cpu_us"]["median"] > 0
            if side == "lightspeed":
                assert "over_lightspeed" not in summary
            else:
                assert summary["over_lightspeed"]["wall"]["median"] > 0
                assert summary["over_lightspeed"]["cpu"]["median"] > 0


def test_table_output_names_the_load_and_every_side() -> None:
    done = _run("onion", "--scale", "0.01", "--windows", "1", "--no-electrum")
    assert done.returncode == 0, done.stderr
    for text in ("load average", "alternating windows", "lightspeed", "pyln-proto", "CPU µs median", "÷ lightspeed"):
        assert text in done.stdout, text


def test_bad_arguments_are_a_clear_error() -> None:
    done = _run("bolt11", "--windows", "0")
    assert done.returncode == 2
    assert "--windows must be >= 1" in done.stderr
    assert "Traceback" not in done.stderr


# The other scripts, each with its smallest existing setting (the store and paid-API runs on the
# stores that need no server; their Redis and PostgreSQL paths are the store tests' business).
OTHERS = {
    "async_pay": ("--quick",),
    "bolt3": (),
    "chain": (),
    "channel": ("--quick",),
    "network": ("--quick",),
    "onion_messages": (),
    "routing": ("--pairs", "2", "--load-windows", "1", "--scale", "0.05"),
    "stores": ("--seconds", "0.05", "--only", "sqlite"),
    "paid_api": ("--seconds", "0.2", "--l402-calls", "2", "--stores", "memory", "--memory-allowances", "200"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_benchmarks_run_and_end_with_their_json_line(name: str) -> None:
    done = _run(name, *OTHERS[name])
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["benchmark"] == name


def test_every_benchmark_script_has_a_smoke_test() -> None:
    """A new script under benchmarks/ must be added here, or have its own smoke test (stream.py and
    stream_instructions.py: tests/test_stream15_benchmark.py); offers.py is left to its owner."""
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    own = (ROOT / "tests" / "test_stream15_benchmark.py").read_text()
    assert "benchmarks\", \"stream\"" in own and "benchmarks\", \"stream_instructions\"" in own
    assert scripts - {"offers", "stream", "stream_instructions"} == set(EXPECTED) | set(OTHERS)
