"""Operator commands as a person types them (subprocesses) against two real `node start` daemons."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_docs17_cli import ENV, Daemon, lightspeed, ok_json


@pytest.mark.slow
def test_operator_commands_against_real_daemons(tmp_path: Path) -> None:
    chain = tmp_path / "chain.sqlite"
    daemons = [Daemon(tmp_path / "alice", chain), Daemon(tmp_path / "bob", chain)]
    try:
        alice, bob = daemons
        a, b = str(alice.datadir), str(bob.datadir)
        alice_id, bob_id = alice.ready["node_id"], bob.ready["node_id"]
        ok_json("fund", "2000000sat", "--datadir", a)
        ok_json("connect", f"{bob_id}@{bob.ready['listen']}", "--datadir", a)
        ok_json("open-channel", bob_id, "1000000sat", "--datadir", a)
        ok_json("chain", "mine", "3", "--datadir", a)
        deadline = time.monotonic() + 45
        while not ok_json("channels", "--datadir", a)["channels"][0]["active"]:
            assert time.monotonic() < deadline, "the channel never became active"
            time.sleep(0.1)

        info = ok_json("getinfo", "--datadir", a)
        assert info["uris"] == [f"{alice_id}@{alice.ready['listen']}"] and info["num_active_channels"] == 1
        signature = ok_json("signmessage", "I run this node", "--datadir", a)["signature"]
        # Bob knows Alice (his channel peer): valid without naming her.
        assert ok_json("verifymessage", "I run this node", signature, "--datadir", b) == {
            "valid": True, "pubkey": alice_id}

        sent = ok_json("keysend", bob_id, "5000sat", "--datadir", a)
        assert sent["status"] == "succeeded" and sent["amount_msat"] == 5_000_000
        assert ok_json("trackpayment", sent["payment_hash"], "--timeout", "1", "--datadir", a)["status"] == "succeeded"
        anything = ok_json("invoice", "new", "any", "tips", "--private", "--datadir", b)
        assert anything["amount_msat"] is None
        paid = ok_json("pay", anything["invoice"], "--amount-msat", "1sat", "--datadir", a)
        assert (paid["status"], paid["amount_msat"]) == ("succeeded", 1000)
        invoice = ok_json("invoice", "new", "2000sat", "tea", "--datadir", b)
        waiter = lightspeed_async("invoice", "wait", invoice["payment_hash"], "--timeout", "60", "--datadir", b)
        assert ok_json("invoice", "lookup", invoice["payment_hash"], "--datadir", b)["status"] == "unpaid"
        ok_json("pay", invoice["invoice"], "--datadir", a)
        out, _err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0 and '"status": "paid"' in out

        channel = ok_json("channels", "--datadir", a)["channels"][0]
        unknown = lightspeed("close", "999x9x9", "--datadir", a)
        assert unknown.returncode == 1 and "no open channel 999x9x9" in unknown.stderr
        closed = ok_json("close", channel["short_channel_id"], "--datadir", a)  # by short channel id
        assert closed["channel_id"] == channel["channel_id"] and closed["state"] == "closed"
        ok_json("chain", "mine", "1", "--datadir", a)
        listed = ok_json("closedchannels", "--datadir", a)["channels"]
        assert [(c["channel_id"], c["close_type"]) for c in listed] == [(channel["channel_id"], "mutual")]
        assert ok_json("pendingchannels", "--datadir", a)["pending_force_closing"] == []

        assert ok_json("stop", "--datadir", b) == {"stopping": True}
        assert bob.process.wait(15) == 0  # exits cleanly, as on SIGTERM
        gone = lightspeed("getinfo", "--datadir", b)
        assert gone.returncode == 1 and "no daemon is running" in gone.stderr

        # A fee policy set by the operator outlives a restart.
        nothing = lightspeed("updatechanpolicy", "--datadir", a)
        assert nothing.returncode == 1 and "give at least one of" in nothing.stderr
        set_ = ok_json("updatechanpolicy", "--base-fee-msat", "1234", "--fee-ppm", "7", "--datadir", a)
        assert (set_["policy"]["fee_base_msat"], set_["policy"]["fee_ppm"]) == (1234, 7)
        ok_json("stop", "--datadir", a)
        assert alice.process.wait(15) == 0
        daemons.append(Daemon(alice.datadir, chain))
        report = ok_json("feereport", "--datadir", a)
        assert (report["policy"]["fee_base_msat"], report["policy"]["fee_ppm"]) == (1234, 7)
    finally:
        for daemon in daemons:
            daemon.stop()


def lightspeed_async(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lightspeed", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
