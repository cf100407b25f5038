"""`node start` and the CLI on awkward addresses (issue 11, item 15): IPv6, busy ports.

Every daemon is a real `lightspeed node start` process; every command is run as
a person would type it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lightspeed.api.address import format_hostport, parse_hostport
from lightspeed.api.datadir import Datadir
from lightspeed.errors import UsageError

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def lightspeed(datadir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightspeed", "--datadir", str(datadir), *args],
                          capture_output=True, text=True, timeout=90, env=ENV)


def call(datadir: Path, *args: str) -> Any:
    result = lightspeed(datadir, *args)
    assert result.returncode == 0, f"lightspeed {' '.join(args)}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


class Daemon:
    def __init__(self, datadir: Path, chain: Path, listen: str, api: str) -> None:
        self.datadir = datadir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen", listen,
             "--api", api, "--chain", str(chain)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError(f"daemon did not start: {self.process.stderr.read() if self.process.stderr else ''}")
        self.ready: dict[str, str] = json.loads(line)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


def wait_for(what: str, check: Any, seconds: float = 45) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# -- addresses --------------------------------------------------------------------------------------

def test_host_and_port_ipv6_in_brackets_only() -> None:
    assert parse_hostport("[::1]:9735", "--api") == ("::1", 9735)
    assert parse_hostport("[fe80::1%lo]:0", "--api") == ("fe80::1%lo", 0)
    assert parse_hostport("localhost:1", "--api") == ("localhost", 1)
    for text, hint in (("::1:9735", "put an IPv6 address in brackets"), ("[::1]", "brackets hold an IPv6"),
                       ("[127.0.0.1]:80", "brackets hold an IPv6"), ("[::1]9735", "brackets hold an IPv6"),
                       ("h:²", "got 'h:²'"), ("h:-1", "got 'h:-1'"), ("h:65536", "got 'h:65536'")):
        with pytest.raises(UsageError) as caught:
            parse_hostport(text, "--api")
        assert str(caught.value).startswith("--api must be HOST:PORT") and hint in str(caught.value), caught.value
    for host, port in (("::1", 0), ("127.0.0.1", 9735), ("localhost", 65535), ("2001:db8::7", 1)):
        assert parse_hostport(format_hostport(host, port), "x") == (host, port)


def test_the_api_address_file_gives_a_url_for_ipv6(tmp_path: Path) -> None:
    datadir = Datadir(tmp_path / "n")
    datadir.create()
    datadir.write_api_address("::1", 8080)
    assert (tmp_path / "n" / "api_address").read_text() == "[::1]:8080\n"
    assert datadir.api_url() == "http://[::1]:8080"
    (tmp_path / "n" / "api_address").write_text("::1:8080\n")  # as a daemon before this fix wrote it
    assert datadir.api_url() == "http://[::1]:8080"
    datadir.write_api_address("127.0.0.1", 1)
    assert datadir.api_url() == "http://127.0.0.1:1"
    (tmp_path / "n" / "api_address").write_text("garbage\n")
    with pytest.raises(UsageError, match="not HOST:PORT"):
        datadir.api_url()


def test_an_api_without_a_port_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    result = lightspeed(tmp_path / "n", "node", "start", "--api", "[::1]", "--listen", "127.0.0.1:0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --api must be HOST:PORT") and "[::1]:9735" in result.stderr
    assert not (tmp_path / "n").exists()


@pytest.mark.slow
def test_every_cli_command_works_with_the_daemons_on_ipv6(tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    started.append(Daemon(tmp_path / "alice", chain, "[::1]:0", "[::1]:0"))
    started.append(Daemon(tmp_path / "bob", chain, "[::1]:0", "[::1]:0"))
    alice, bob = started
    a, b = alice.datadir, bob.datadir
    assert alice.ready["api"].startswith("[::1]:") and alice.ready["listen"].startswith("[::1]:")

    info = call(a, "getinfo")
    assert info["node_id"] == alice.ready["node_id"] and info["listen"] == alice.ready["listen"]
    assert call(a, "newaddress")["address"].startswith("bcrt1")
    assert call(a, "fund", "1000000")["confirmed"] is True
    assert call(a, "balance")["onchain_confirmed_sat"] == 1_000_000
    peer = f"{bob.ready['node_id']}@{bob.ready['listen']}"  # pasted from bob's ready line: [::1]:PORT
    assert call(a, "connect", peer) == {"node_id": bob.ready["node_id"], "connected": True}
    assert [p["node_id"] for p in call(b, "peers")["peers"]] == [alice.ready["node_id"]]
    channel_id = call(a, "open-channel", bob.ready["node_id"], "500000")["channel_id"]
    call(a, "chain", "mine", "3", "--chain", str(chain))
    wait_for("the channel never became ready", lambda: call(b, "channels")["channels"][0]["state"] == "normal")
    invoice = call(b, "invoice", "new", "10000000", "over IPv6")
    assert [i["payment_hash"] for i in call(b, "invoice", "list")["invoices"]] == [invoice["payment_hash"]]
    assert call(a, "pay", invoice["invoice"])["status"] == "succeeded"
    assert [p["status"] for p in call(a, "payments")["payments"]] == ["succeeded"]
    for table in (lightspeed(a, "payments", "--table"), lightspeed(a, "channels", "--table")):
        assert table.returncode == 0 and "Traceback" not in table.stderr
    wait_for("the payment never settled on bob's side",
             lambda: call(b, "channels")["channels"][0]["pending_htlcs"] == 0)
    assert call(a, "close", channel_id)["state"] == "closed"
    assert [c["state"] for c in call(a, "channels")["channels"]] == ["closed"]


# -- busy ports -------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--listen", "--api"])
def test_a_busy_port_fails_start_and_leaves_no_datadir(tmp_path: Path, option: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        addresses = {"--listen": "127.0.0.1:0", "--api": "127.0.0.1:0", option: f"127.0.0.1:{port}"}
        result = lightspeed(tmp_path / "fresh" / "node", "node", "start", "--listen", addresses["--listen"],
                            "--api", addresses["--api"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {option} 127.0.0.1:{port}: ") and "in use" in result.stderr
    assert not (tmp_path / "fresh" / "node").exists()
    assert not (tmp_path / "fresh" / "chain.sqlite").exists()


@pytest.mark.slow
def test_a_busy_port_leaves_an_existing_datadir_usable(tmp_path: Path, started: list[Daemon]) -> None:
    datadir, chain = tmp_path / "node", tmp_path / "chain.sqlite"
    first = Daemon(datadir, chain, "127.0.0.1:0", "127.0.0.1:0")
    started.append(first)
    node_id = first.ready["node_id"]
    assert first.stop() == 0
    before = sorted(p.name for p in datadir.iterdir())
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    result = lightspeed(datadir, "node", "start", "--listen", f"127.0.0.1:{port}", "--chain", str(chain))
    assert result.returncode == 1 and result.stderr.startswith(f"error: --listen 127.0.0.1:{port}: ")
    assert sorted(p.name for p in datadir.iterdir()) == before  # nothing removed, nothing half made
    busy.close()
    second = Daemon(datadir, chain, f"127.0.0.1:{port}", "127.0.0.1:0")  # the port is free again
    started.append(second)
    assert second.ready["node_id"] == node_id and call(datadir, "getinfo")["listen"] == f"127.0.0.1:{port}"
