"""End to end: two `lightspeed node start` processes on loopback, driven through the CLI.

Each daemon is its own OS process with its own datadir; they share one regtest
chain file. Everything a person would type is run as a subprocess: fund,
connect, open-channel, chain mine, invoice new, pay (both ways), payments,
close, balance. The processes are always killed by the fixture's finalizer.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightspeed.api.datadir import Datadir

PYTHON = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def lightspeed(datadir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PYTHON, "-m", "lightspeed", "--datadir", str(datadir), *args],
                            capture_output=True, text=True, timeout=90, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"lightspeed {' '.join(args)} failed: {result.stderr}")
    return result


def call(datadir: Path, *args: str) -> Any:
    return json.loads(lightspeed(datadir, *args).stdout)


class Daemon:
    def __init__(self, datadir: Path, chain: Path, listen: str = "127.0.0.1:0", *extra: str) -> None:
        self.datadir = datadir
        self.log = open(datadir.parent / f"{datadir.name}.log", "a")  # noqa: SIM115 - closed in stop()
        self._terminated = False
        self.process = subprocess.Popen(
            [PYTHON, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen", listen,
             "--api", "127.0.0.1:0", "--chain", str(chain), *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=ENV)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the daemon's one "ready" line
        if not line:
            self.stop()
            raise AssertionError(f"daemon did not start: {(datadir.parent / f'{datadir.name}.log').read_text()}")
        self.ready: dict[str, str] = json.loads(line)

    @property
    def peer_address(self) -> str:
        return f"{self.ready['node_id']}@{self.ready['listen']}"

    def terminate(self) -> None:
        """SIGTERM, once (a second one could reach it after it removed its handler): the shutdown
        begins; ``stop()`` waits for its end. The fixture signals every daemon before waiting."""
        if not self._terminated and self.process.poll() is None:
            self._terminated = True
            self.process.terminate()

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:  # where it hangs goes into the failure's output
                self.process.send_signal(signal.SIGUSR1)
                time.sleep(1)
                self.process.kill()
                self.process.wait(5)
                self.log.flush()
                print(f"{self.datadir.name} did not stop within 20 s:\n"
                      f"{(self.datadir.parent / f'{self.datadir.name}.log').read_text()[-20000:]}")
        self.log.close()
        return self.process.returncode


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    """Every daemon a test starts goes here, so the finalizer stops (or kills) it whatever happens."""
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:  # they shut down side by side, not one after the other
            daemon.terminate()
        for daemon in daemons:
            daemon.stop()


@pytest.fixture
def daemons(tmp_path: Path, started: list[Daemon]) -> tuple[Daemon, Daemon, Path]:
    chain = tmp_path / "chain.sqlite"
    started.append(Daemon(tmp_path / "alice", chain))
    started.append(Daemon(tmp_path / "bob", chain))
    return started[0], started[1], chain


def wait_for(what: str, check: Any, seconds: float = 45) -> None:  # generous: CI machines are slow
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)



def open_line(line: list[Daemon], chain: Path, fund_sat: str, capacity_sat: str, *open_args: str) -> None:
    """Channels along ``line`` (each daemon funds one to the next, ``open_args`` added to its
    ``open-channel``), six confirmations mined (public channels get announced), and every
    channel ``normal`` at both ends."""
    for funder, peer in itertools.pairwise(line):
        call(funder.datadir, "fund", fund_sat)
        call(funder.datadir, "connect", peer.peer_address)
        call(funder.datadir, "open-channel", peer.ready["node_id"], capacity_sat, *open_args)
    call(line[0].datadir, "chain", "mine", "7", "--chain", str(chain))
    for i, daemon in enumerate(line):
        count = (i > 0) + (i < len(line) - 1)
        wait_for(f"{daemon.datadir.name}'s channels never became ready",
                 lambda daemon=daemon, count=count: [ch["state"] for ch in call(daemon.datadir, "channels")["channels"]]
                 == ["normal"] * count)

@pytest.mark.slow
def test_two_daemons_open_pay_both_ways_and_close(daemons: tuple[Daemon, Daemon, Path],
                                                  started: list[Daemon]) -> None:
    alice, bob, chain = daemons
    a, b = alice.datadir, bob.datadir
    funded = call(a, "fund", "2000000")
    assert funded["amount_sat"] == 2_000_000 and funded["address"].startswith("bcrt1")
    assert call(a, "balance")["onchain_confirmed_sat"] == 2_000_000

    assert call(a, "connect", bob.peer_address) == {"node_id": bob.ready["node_id"], "connected": True}
    opened = call(a, "open-channel", bob.ready["node_id"], "1000000")
    assert opened["state"] == "awaiting_confirmations" and opened["capacity_sat"] == 1_000_000
    channel_id = opened["channel_id"]
    assert call(a, "chain", "mine", "3", "--chain", str(chain))["mined"] == 3
    wait_for("the channel never became ready", lambda: call(b, "channels")["channels"][0]["state"] == "normal")

    table = lightspeed(a, "channels", "--table").stdout
    assert "normal" in table and "1,000,000" in table and "1,000,000,000" in table

    invoice = call(b, "invoice", "new", "300000000", "a book")
    paid = call(a, "pay", invoice["invoice"])
    assert paid["status"] == "succeeded" and paid["payment_hash"] == invoice["payment_hash"]
    from lightspeed.crypto.hashes import sha256

    assert sha256(bytes.fromhex(paid["preimage"])).hex() == invoice["payment_hash"]  # proof of payment
    back = call(a, "invoice", "new", "120000000", "change")
    assert call(b, "pay", back["invoice"])["status"] == "succeeded"

    twice = lightspeed(a, "pay", invoice["invoice"], check=False)  # the double-pay guard, through the CLI
    assert twice.returncode == 1 and twice.stderr.startswith("error: invoice: this invoice is already paid")

    sent = call(a, "payments", "--direction", "sent")["payments"]
    assert all(isinstance(p["created_at"], int) and isinstance(p["settled_at"], int) for p in sent)
    received = call(a, "payments", "--direction", "received")["payments"]
    assert [(p["amount_msat"], p["status"]) for p in sent] == [(300_000_000, "succeeded")]
    assert [(p["amount_msat"], p["payment_hash"]) for p in received] == [(120_000_000, back["payment_hash"])]
    assert [i["status"] for i in call(b, "invoice", "list")["invoices"]] == ["paid"]

    def settled_balances(datadir: Path) -> tuple[int, int, int]:
        channel = call(datadir, "channels")["channels"][0]
        return channel["local_balance_msat"], channel["remote_balance_msat"], channel["pending_htlcs"]

    # the last revoke_and_ack may still be on its way when pay returns
    wait_for("bob's balances", lambda: settled_balances(b) == (180_000_000, 820_000_000, 0))

    # Bob's daemon restarts on the same address: its store brings the channel and payments back,
    # Alice's node dials it again, channel_reestablish runs, and payments flow as before.
    assert bob.stop() == 0
    bob = Daemon(b, chain, listen=bob.ready["listen"])
    started.append(bob)
    assert [p["payment_hash"] for p in call(b, "payments", "--direction", "received")["payments"]] == [
        invoice["payment_hash"]]
    wait_for("bob's channel never came back", lambda: [
        (c["state"], c["local_balance_msat"]) for c in call(b, "channels")["channels"]] == [("normal", 180_000_000)])
    after = call(b, "invoice", "new", "5000000", "after the restart")
    assert call(a, "pay", after["invoice"])["status"] == "succeeded"
    wait_for("alice's balances", lambda: settled_balances(a) == (815_000_000, 185_000_000, 0))
    wait_for("bob's balances", lambda: settled_balances(b) == (185_000_000, 815_000_000, 0))

    closed = call(b, "close", channel_id)  # the fundee closes; the funder pays the fee
    assert closed["state"] == "closed"
    call(a, "chain", "mine", "1", "--chain", str(chain))
    wait_for("bob's closing output never confirmed", lambda: call(b, "balance")["onchain_confirmed_sat"] == 185_000)
    alice_balance = call(a, "balance")
    # Alice keeps what she did not fund or pay, less the funding and closing fees (a few hundred sat).
    assert 1_814_000 < alice_balance["onchain_confirmed_sat"] < 1_815_000
    assert alice_balance["channels_local_msat"] == 0
    assert [c["state"] for c in call(a, "channels")["channels"]] == ["closed"]


@pytest.mark.slow
def test_a_daemon_needs_its_token_and_stops_cleanly(daemons: tuple[Daemon, Daemon, Path]) -> None:
    alice, _bob, _chain = daemons
    datadir = Datadir(alice.datadir)
    url = f"http://{datadir.api_address()}/v1/getinfo"
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 401 and "token" in refused.json()["error"]["reason"]
    wrong = httpx.get(url, headers={"Authorization": "Bearer " + "0" * 64}, timeout=10)
    assert wrong.status_code == 401
    info = httpx.get(url, headers={"Authorization": f"Bearer {datadir.token()}"}, timeout=10).json()
    assert info["node_id"] == alice.ready["node_id"] and info["network"] == "regtest"
    for name in ("wallet_mnemonic", "api_token", "api_address"):
        assert (alice.datadir / name).stat().st_mode & 0o777 == 0o600, name

    second = subprocess.run([PYTHON, "-m", "lightspeed", "node", "start", "--datadir", str(alice.datadir),
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30, env=ENV)
    assert second.returncode == 1 and second.stderr.startswith("error: another daemon is already running")

    alice.process.send_signal(signal.SIGTERM)
    assert alice.process.wait(10) == 0
    assert not (alice.datadir / "api_address").exists()
    gone = lightspeed(alice.datadir, "getinfo", check=False)
    assert gone.returncode == 1 and gone.stderr.startswith("error: no daemon is running")
    assert "Traceback" not in gone.stderr

    restarted = Daemon(alice.datadir, _chain)  # same datadir: same node key
    try:
        assert restarted.ready["node_id"] == alice.ready["node_id"]
    finally:
        assert restarted.stop() == 0


def test_the_cli_says_when_no_daemon_answers(tmp_path: Path) -> None:
    datadir = Datadir(tmp_path / "node")
    datadir.create()
    datadir.ensure_token()
    datadir.write_api_address("127.0.0.1", 1)  # a stale address file: nothing listens there
    result = lightspeed(datadir.path, "balance", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: the daemon is not running (nothing answers at http://127.0.0.1:1)")


def test_chain_commands_work_on_a_chain_file_without_a_daemon(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lightspeed.bitcoin.address import address_to_script
    from lightspeed.bitcoin.network import REGTEST
    from lightspeed.chain import RegtestChain, Wallet
    from lightspeed.cli.main import cli

    chain_file = tmp_path / "chain.sqlite"
    RegtestChain(chain_file).close()
    runner = CliRunner()
    mined = runner.invoke(cli, ["chain", "mine", "2", "--chain", str(chain_file)])
    assert mined.exit_code == 0 and json.loads(mined.stdout)["height"] == 2
    wallet = Wallet(b"a wallet seed for the faucet", RegtestChain(chain_file))
    address = wallet.new_address()
    sent = runner.invoke(cli, ["chain", "send", address, "50000", "--chain", str(chain_file)])
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["amount_sat"] == 50_000
    assert wallet.balance_sat(1) == 50_000  # confirmed by the faucet's block
    assert address_to_script(address, REGTEST) == wallet.utxos()[0].output.script_pubkey
    info = json.loads(runner.invoke(cli, ["chain", "info", "--chain", str(chain_file)]).stdout)
    assert info["mempool"] == 0 and info["height"] > 2
    # The default chain is DATADIR/../chain.sqlite.
    by_datadir = runner.invoke(cli, ["--datadir", str(tmp_path / "alice"), "chain", "info"])
    assert json.loads(by_datadir.stdout)["height"] == info["height"]
    bad = runner.invoke(cli, ["chain", "send", "bc1qnotregtest", "50000", "--chain", str(chain_file)])
    assert bad.exit_code == 1 and bad.stderr.startswith("error: ")


@pytest.mark.slow
def test_three_daemons_learn_the_graph_by_gossip_and_pay_over_two_hops(tmp_path: Path,
                                                                        started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("alice", "bob", "carol"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    alice, bob, carol = started
    a, b, c = alice.datadir, bob.datadir, carol.datadir
    call(a, "fund", "2000000")
    call(b, "fund", "2000000")
    call(a, "connect", bob.peer_address)
    call(b, "connect", carol.peer_address)
    call(a, "open-channel", bob.ready["node_id"], "1000000")
    call(b, "open-channel", carol.ready["node_id"], "1000000")
    call(a, "chain", "mine", "7", "--chain", str(chain))  # 6 confirmations: the channels get announced
    wait_for("alice's channel never became ready", lambda: call(a, "channels")["channels"][0]["state"] == "normal")
    wait_for("bob's channels never became ready",
             lambda: [ch["state"] for ch in call(b, "channels")["channels"]] == ["normal", "normal"])
    invoice = call(c, "invoice", "new", "50000000", "over two hops")

    def paid() -> bool:  # alice learns bob-carol from gossip; until then there is no route
        sent = call(a, "payments", "--direction", "sent")["payments"]
        if any(p["payment_hash"] == invoice["payment_hash"] and p["status"] == "succeeded" for p in sent):
            return True
        if any(p["payment_hash"] == invoice["payment_hash"] and p["status"] == "pending" for p in sent):
            return False  # an attempt is still under way: let it finish
        attempt = lightspeed(a, "pay", invoice["invoice"], check=False)
        return attempt.returncode == 0 and json.loads(attempt.stdout)["status"] == "succeeded"

    wait_for("alice never paid carol through bob", paid, seconds=60)
    received = call(c, "payments", "--direction", "received")["payments"]
    assert [(p["amount_msat"], p["payment_hash"]) for p in received] == [(50_000_000, invoice["payment_hash"])]
