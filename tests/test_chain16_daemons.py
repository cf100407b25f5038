"""Two `lightspeed node start` daemons that see the chain only through the Electrum protocol.

`lightspeed chain serve-electrum` serves the regtest chain file over TLS (a self-signed
certificate made here, trusted with --electrum-cafile); each daemon runs
`--network regtest --electrum HOST:PORT:s` and never opens the chain file. The test plays the
rest of the network: it pays the node's address and mines blocks on the file. The daemons
open a channel, pay, close it cooperatively, open another, and resolve a force close on chain
(to_remote at once, to_local after the delay), all from what their Electrum client verified.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lightspeed.chain.regtest import RegtestChain
from tests.support.electrum_servers import self_signed
from tests.test_daemon import ENV, PYTHON, call, lightspeed, wait_for


class Process:
    """A long-running `lightspeed` command whose first stdout line is its ready line."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([PYTHON, "-m", "lightspeed", *args], stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=ENV)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError(f"lightspeed {' '.join(args)} did not start: {log.read_text()}")
        self.ready: dict[str, Any] = json.loads(line)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        return self.process.returncode


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()


def _node(tmp_path: Path, name: str, server: str, cert: Path) -> Process:
    datadir = tmp_path / name
    return Process(tmp_path / f"{name}.log", "node", "start", "--datadir", str(datadir), "--listen",
                   "127.0.0.1:0", "--api", "127.0.0.1:0", "--network", "regtest", "--electrum", server,
                   "--electrum-cafile", str(cert))


@pytest.mark.slow
def test_two_electrum_daemons_open_pay_close_and_force_close(tmp_path: Path, processes: list[Process]) -> None:
    chain_file = tmp_path / "chain.sqlite"
    chain = RegtestChain(chain_file)
    chain.mine(1)
    cert, key = self_signed(tmp_path)
    server = Process(tmp_path / "electrum.log", "chain", "serve-electrum", "--chain", str(chain_file),
                     "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    processes.append(server)
    address: str = server.ready["electrum_server"]
    assert address.endswith(":s")
    alice_p, bob_p = _node(tmp_path, "alice", address, cert), _node(tmp_path, "bob", address, cert)
    processes += [alice_p, bob_p]
    assert alice_p.ready["chain_file"] is None and alice_p.ready["electrum"] == [address]
    a, b = tmp_path / "alice", tmp_path / "bob"

    def mine(blocks: int) -> None:
        chain.mine(blocks)
        tip = chain.tip()[0]
        wait_for("the daemons follow the tip", lambda: all(
            call(d, "getinfo")["block_height"] == tip for d in (a, b)))

    def onchain(datadir: Path) -> int:
        return int(call(datadir, "balance")["onchain_confirmed_sat"])

    no_faucet = lightspeed(a, "fund", "1000", check=False)
    assert no_faucet.returncode == 1 and "follows Electrum servers" in no_faucet.stderr
    funding_address = call(a, "newaddress")["address"]
    call(a, "chain", "send", funding_address, "2000000sat", "--chain", str(chain_file))
    wait_for("alice sees her coins through Electrum", lambda: onchain(a) == 2_000_000)

    bob_id = bob_p.ready["node_id"]
    assert call(a, "connect", f"{bob_id}@{bob_p.ready['listen']}")["connected"] is True
    opened = call(a, "open-channel", bob_id, "1000000")
    mine(3)
    wait_for("the channel never became ready", lambda: [c["state"] for c in call(b, "channels")["channels"]]
             == ["normal"])
    invoice = call(b, "invoice", "new", "300000000", "over electrum")
    assert call(a, "pay", invoice["invoice"])["status"] == "succeeded"
    wait_for("bob's balance", lambda: call(b, "channels")["channels"][0]["local_balance_msat"] == 300_000_000)

    assert call(b, "close", opened["channel_id"])["state"] == "closed"  # cooperative: the funder pays the fee
    mine(1)
    wait_for("bob's closing output", lambda: onchain(b) == 300_000)
    wait_for("alice's change and closing output", lambda: 1_690_000 < onchain(a) < 1_700_000)

    second = call(a, "open-channel", bob_id, "500000")
    mine(3)
    wait_for("the second channel", lambda: any(
        c["channel_id"] == second["channel_id"] and c["state"] == "normal" for c in call(a, "channels")["channels"]))
    invoice = call(b, "invoice", "new", "100000000", "before the force close")
    assert call(a, "pay", invoice["invoice"])["status"] == "succeeded"
    wait_for("settled", lambda: [c["local_balance_msat"] for c in call(b, "channels")["channels"]
                                 if c["channel_id"] == second["channel_id"]] == [100_000_000])
    alice_before, bob_before = onchain(a), onchain(b)
    forced = call(a, "close", second["channel_id"], "--force")
    assert forced["state"] == "closed"
    mine(1)
    for _ in range(5):  # anchor channels: bob's to_remote is his after one confirmation, then swept
        if onchain(b) > bob_before:
            break
        mine(1)
    wait_for("bob's to_remote, within a block or two", lambda: onchain(b) > bob_before)
    # his anchor rides along in the same sweep: 330 sat, less the ~71 its input costs at 1 sat/vbyte
    assert 99_000 < onchain(b) - bob_before <= 100_000 + 330 - 71
    # alice's to_local waits for bob's to_self_delay; her anchor is swept alone at once: 330 less 113.
    # Her sweep may reach the mempool after the block that confirmed bob's, so mine until it confirms.
    for _ in range(4):
        if onchain(a) == alice_before + 217:
            break
        time.sleep(2)
        mine(1)
    wait_for("alice's anchor", lambda: onchain(a) == alice_before + 217)
    mine(143)  # bob's to_self_delay (144) less one: the sweep cannot be mined yet
    for _ in range(6):  # then block by block: the sweep is broadcast once the next block may hold it
        mine(1)
        if onchain(a) > alice_before + 217:
            break
    wait_for("alice's to_local swept", lambda: onchain(a) > alice_before + 217)
    assert 390_000 < onchain(a) - alice_before < 400_000
    assert alice_p.process.poll() is None and bob_p.process.poll() is None
    print(sys.argv[0], "ok")
