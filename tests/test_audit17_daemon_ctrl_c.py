"""Issue 17 audit: Ctrl-C in `lightspeed node start` (the terminal the README runs it in).

SIGTERM and `lightspeed stop` were tested; Ctrl-C (SIGINT) was not: the daemon must stop
cleanly, exit 0, say "stopped", remove its API address file, and print no `Aborted!` or traceback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_docs17_cli import ENV


def test_ctrl_c_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    datadir = tmp_path / "alice"
    process = subprocess.Popen([sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir),
                                "--listen", "127.0.0.1:0", "--chain", str(tmp_path / "chain.sqlite")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert (datadir / "api_address").read_text().strip() == ready["api"]
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == "" and err.endswith("\nstopped\n"), err[-500:]
    assert "Aborted" not in err and "Traceback" not in err and "Error" not in err, err[-500:]
    assert not (datadir / "api_address").exists()
