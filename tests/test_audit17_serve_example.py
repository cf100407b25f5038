"""Issue 17 audit: `serve-example` at 80 columns and on Ctrl-C, as a person runs it.

Its banner's "try:" commands were wrapped by rich mid-path (a command to copy, broken over two
lines), and its Ctrl-C path had no test: it must stop with exit 0, no `Aborted!`, no traceback.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_banner_s_commands_stay_whole_at_80_columns_and_ctrl_c_stops_it_cleanly(tmp_path: Path) -> None:
    chain = tmp_path / "a-rather-long-directory-name-for-the-chain" / "chain.sqlite"
    env = {**os.environ, "COLUMNS": "80", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lightspeed", "serve-example", "--listen", "127.0.0.1:0",
                                "--node-port", "0", "--chain", str(chain), "--store", "memory"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not any(line.startswith("     lightspeed stream ") for line in seen):
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError(f"no banner within 60 s: {seen}") from None
        (call,) = [line for line in seen if line.startswith("try: lightspeed call http://127.0.0.1:")]
        assert call.rstrip("\n").endswith(f"/weather/lisbon -n 100 --chain {chain}"), call
        (stream,) = [line for line in seen if line.startswith("     lightspeed stream ws://127.0.0.1:")]
        assert stream.rstrip("\n").endswith(f"/charge --max-msat 30000 --chain {chain}"), stream
        assert all(len(line.rstrip("\n")) <= 80 for line in seen if "│" in line), seen  # the table fits
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())  # the ready line, on stdout as node start's
        assert ready["url"] == call.split()[3].rsplit("/weather", 1)[0] and ready["metered"] in stream
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert process.returncode == 0, (process.returncode, rest)
    assert not any("Aborted" in line or "Traceback" in line or "Error" in line for line in rest), rest
