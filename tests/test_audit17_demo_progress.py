"""Issue 17 audit: the demo shows progress per scenario as it runs, not everything at the end.

Run as a user runs it (a subprocess, stderr a pipe, no PYTHONUNBUFFERED): each scenario's start
and outcome line must arrive while the demo is still running, and Ctrl-C then stops it with one
line (exit 130), no `Aborted!` and no traceback.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from lightspeed.cli.demo import SCENARIOS


def test_each_scenario_s_progress_arrives_while_the_demo_runs_and_ctrl_c_ends_it_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen([sys.executable, "-m", "lightspeed", "demo", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    total = len(SCENARIOS)
    seen: list[str] = []
    try:
        # Scenarios 1-3 are quick; the 4th start line must come while the others still run.
        expected = [f"[1/{total}] {SCENARIOS[0][0]} ...", f"[1/{total}] ok in ",
                    f"[2/{total}] {SCENARIOS[1][0]} ...", f"[2/{total}] ok in ",
                    f"[3/{total}] {SCENARIOS[2][0]} ...", f"[3/{total}] ok in ",
                    f"[4/{total}] {SCENARIOS[3][0]} ..."]
        deadline = time.monotonic() + 60
        while len(seen) < len(expected):
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())).rstrip("\n"))
            except queue.Empty:
                raise AssertionError(f"no progress line within 60 s; seen {seen}") from None
        assert process.poll() is None, "the progress came only when the demo had ended"
        for line, want in zip(seen, expected, strict=True):
            assert line.startswith(want), (line, want)
            if want.endswith("ok in "):
                assert re.fullmatch(r"\[\d/\d+\] ok in [0-9,]+ ms", line), line
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert process.stdout is not None
        out = process.stdout.read()
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert process.returncode == 130, (process.returncode, rest)
    assert out == ""
    assert rest[-1:] == ["interrupted\n"], rest
    assert not any("Aborted" in line or "Traceback" in line for line in rest), rest
