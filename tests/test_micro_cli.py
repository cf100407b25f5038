"""``lightspeed serve-example`` and ``lightspeed call`` as two processes sharing a regtest chain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightspeed.cli.main import cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_client_process_pays_a_server_process_per_call(tmp_path: Path) -> None:
    port = free_port()
    chain = tmp_path / "chain.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "serve-example", "--listen", f"127.0.0.1:{port}",
         "--chain", str(chain), "--store", f"sqlite:{tmp_path / 'allowances.sqlite'}", "--price-msat", "1",
         "--per-calls", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        result = subprocess.run(
            [sys.executable, "-m", "lightspeed", "call", f"http://127.0.0.1:{port}/forecast/oslo", "-n", "300",
             "--concurrency", "3", "--calls-per-lane", "800", "--chain", str(chain), "--json"],
            env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["statuses"] == {"200": 300}
        assert report["lightning_payments"] == 1  # 3 lanes x 800 links; a forecast costs 5 links
        assert report["paid_msat"] == 3 * 800 // 4
        assert len(report["last_response"]["celsius"]) == 7
        # 2,400 calls paid, 300 forecasts spent 1,500: the 900 unused ones are reported and refunded to
        # us through the return path our payment carried, over the channel the example server opened
        # back to us (our own new channel holds nothing of the server's above its reserve)
        assert report["unused_calls"] == 900
        refund = report["refund"]
        assert (refund["amount_msat"], refund["status"], refund["refunded_msat"]) == (225, "paid", 225), refund
        assert refund["received_msat"] == 225
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def test_call_reports_an_unreachable_api_as_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["call", f"http://127.0.0.1:{free_port()}/x", "--chain",
                                      str(tmp_path / "chain.sqlite")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_serve_example_refuses_a_bad_store_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve-example", "--listen", f"127.0.0.1:{free_port()}",
                                      "--store", "mongodb://nope", "--chain", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 1 and "error: store:" in result.output
