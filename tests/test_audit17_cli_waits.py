"""Issue 17 audit: commands that wait on the daemon (`invoice wait`, `trackpayment`, `pay`,
`keysend`...) wait as long as their --timeout says, and Ctrl-C in `pay` names the command that
waits for the payment's end.

The HTTP client gave up after a fixed 120 s whatever --timeout said: `invoice wait --timeout 600`
failed at 120 s ("did not answer"), and a daemon that stopped answering kept `trackpayment
--timeout 1` hanging for two minutes. The "daemon" here is a real socket that accepts and never
answers; the commands run as a person types them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_docs17_cli import ENV, INVOICE, interrupt

WAIT = "00" * 32


@pytest.fixture
def silent_daemon(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    datadir = tmp_path / "node"
    datadir.mkdir()
    (datadir / "api_address").write_text(f"127.0.0.1:{server.getsockname()[1]}")
    (datadir / "api_token").write_text("ab" * 16)
    try:
        yield datadir, server
    finally:
        server.close()


@pytest.mark.slow
def test_the_client_waits_for_the_command_s_timeout_and_no_longer(silent_daemon: tuple[Path, socket.socket]) -> None:
    datadir, _server = silent_daemon  # the backlog holds the connections: they are accepted by the kernel
    commands = {
        "trackpayment": (["trackpayment", WAIT, "--timeout", "1"], 16),
        "invoice wait": (["invoice", "wait", WAIT, "--timeout", "3"], 18),
        "pay": (["pay", INVOICE, "--timeout", "2"], 17),
        "keysend": (["keysend", "02" + "11" * 32, "1000", "--timeout", "1"], 16),
    }
    started = time.monotonic()
    running = {name: subprocess.Popen([sys.executable, "-m", "lightspeed", *args, "--datadir", str(datadir)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
               for name, (args, _within) in commands.items()}
    try:
        for name, process in running.items():
            _out, err = process.communicate(timeout=60)  # it was 120 s for each
            within = commands[name][1]
            assert process.returncode == 1, (name, err)
            assert err == f"error: the daemon at {_url(datadir)} did not answer within {within} s\n", (name, err)
        assert time.monotonic() - started < 45
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _url(datadir: Path) -> str:
    return "http://" + (datadir / "api_address").read_text()


def test_pay_accepts_the_daemon_s_timeout_range_at_its_boundary(silent_daemon: tuple[Path, socket.socket]) -> None:
    datadir, _server = silent_daemon
    refused = subprocess.run([sys.executable, "-m", "lightspeed", "pay", INVOICE, "--timeout", "601", "--datadir",
                              str(datadir)], capture_output=True, text=True, timeout=60, env=ENV)
    assert refused.returncode == 2 and "601 is not in the range 1<=x<=600" in refused.stderr, refused.stderr


def test_ctrl_c_in_pay_names_the_command_that_waits_for_the_payment(
        silent_daemon: tuple[Path, socket.socket]) -> None:
    datadir, server = silent_daemon
    code, out, err = interrupt(["pay", INVOICE, "--datadir", str(datadir)], server)
    payment_hash = "0001020304050607080900010203040506070809000102030405060708090102"  # BOLT 11's example
    assert (code, out) == (130, "")
    assert err == (f"interrupted: the daemon goes on with the payment; `lightspeed trackpayment {payment_hash}` "
                   "waits for its end\n")
