"""``python -m benchmarks stream --quick``: it runs, and its JSON has the honest comparison's shape.

No speed is asserted (the suite must not depend on the machine); what is checked: the tick beside
SHA-256 and beside a WebSocket echo with wall and CPU time per window, the load at start and end,
and the concurrent-streams part with per-stream rates, server CPU per tick and receipts that
recompute from their links.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_stream_benchmark_quick_mode() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks", "stream", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["benchmark"] == "stream" and doc["quick"] is True and doc["windows"] == 2
    assert len(doc["machine"]["load_average"]) == 3 and len(doc["load_average_end"]) == 3
    expected = {"one tick, sans-IO machines": {"lightspeed", "SHA-256 (32 B)"},
                "one tick over WebSocket (loopback, server process)": {"lightspeed", "WebSocket echo"}}
    for operation, sides in expected.items():
        got = doc["results"][operation]
        assert set(got) == sides
        for side, summary in got.items():
            assert summary["windows"] == 2
            assert summary["wall_us"]["min"] <= summary["wall_us"]["median"] <= summary["wall_us"]["max"]
            assert summary["cpu_us"]["median"] > 0
            assert ("over_lightspeed" in summary) == (side != "lightspeed")
    concurrent = doc["concurrent"]
    assert concurrent["streams"] == 20 and concurrent["receipts_consistent"] == 20
    rates = concurrent["ticks_per_s_per_stream"]
    # the charger's schedule: 21 slots can fall in a 2 s window, and one report made up from before it
    assert 0 < rates["min"] <= rates["p10"] <= rates["median"] <= rates["max"] <= 11
    assert concurrent["reports_made_up"] >= 0 and concurrent["schedules_restarted"] >= 0
    assert concurrent["server_cpu_us_per_tick"] > 0 and concurrent["ticks_per_s_all"] > 0
    assert concurrent["buyers_cpu_us_per_tick"] > 0 and doc["ws"] == "fast"  # stream/wsserver.py serves them
    # the window read each second: where the late reports fall, and the rate in the seconds without
    each = concurrent["per_second"]
    readings = each["readings"]
    assert each["seconds"] == len(readings) >= 2 and 0 <= each["seconds_with_late_reports"] <= each["seconds"]
    assert [r["t"] for r in readings] == sorted(r["t"] for r in readings) and readings[-1]["t"] <= concurrent["seconds"] + 0.1
    assert sum(r["late"] for r in readings) == concurrent["reports_made_up"]
    assert sum(r["restarts"] for r in readings) == concurrent["schedules_restarted"]
    calm = [r["ticks_per_s"] for r in readings if r["late"] == 0 and r["restarts"] == 0]
    assert (each["ticks_per_s_all_when_none_late"] is None) == (not calm)


@pytest.mark.slow
def test_stream_instructions_quick_mode_counts_the_server_under_callgrind() -> None:
    """``python -m benchmarks stream_instructions --quick``: the server's instructions per tick and per
    echo, counted by callgrind around each window (so not its start-up). What is checked is the
    shape and that the counts are the server's work, not a constant: a tick (a JSON parse, a
    hash, a SQLite update, the meter) retires more instructions than an echo of the same size."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", "stream_instructions", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["benchmark"] == "stream_instructions" and doc["quick"] is True
    this = doc["sides"]["this"]
    tick, echo = this["instructions_per_tick"]["median"], this["instructions_per_echo"]["median"]
    assert 10_000 < echo < tick < 10_000_000  # imports alone are hundreds of millions: not counted
    assert this["tick_over_echo"] == round(tick / echo, 2) > 1
