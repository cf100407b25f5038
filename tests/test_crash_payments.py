"""kill -9 the payer or the payee in the middle of a stream of payments; nothing is lost.

Two node processes (``tests.support.node_runner``) on loopback share one regtest chain
file. The payer streams payments for the payee's invoices, many in flight at once; at
a random moment one process is killed with SIGKILL and restarted from its datadir.
The channel is reestablished, the payer asks again for every invoice (an invoice
already paid must be refused, one whose payment failed may be paid again), and once
the channel is quiet:

- every payment the payer ever started ended succeeded or failed (none pending);
- the payer's succeeded payments are exactly the payee's paid invoices;
- balances reconcile to the msat on both sides: the payee holds exactly what it was
  paid, the payer the rest, both sides agree, and nothing is left in flight.
"""

from __future__ import annotations

import queue
import random
import time
from pathlib import Path
from typing import Any

import pytest

from lightspeed.chain import RegtestChain
from tests.support.runner_client import RunnerProcess, free_port, wait_until

FUNDING_SAT = 1_000_000
AMOUNT_MSAT = 1_000_000
PAYMENTS = 24


def _open_channel(chain: RegtestChain, payer: RunnerProcess, payee: RunnerProcess) -> str:
    chain.fund(bytes.fromhex(payer.call("info")["script"]), 3_000_000)
    payer.call("connect", host="127.0.0.1", port=payee.port, node_id=payee.node_id)
    request = payer.send("open", node_id=payee.node_id, funding_sat=FUNDING_SAT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chain.mine(1)
        try:
            answer = payer.answer(request, timeout=0.05)
        except queue.Empty:
            continue
        assert "error" not in answer, answer
        return str(answer["channel_id"])
    raise AssertionError("the channel did not open")


def _quiet(node: RunnerProcess, cid: str) -> dict[str, Any] | None:
    state = node.call("state")
    channel = state["channels"].get(cid)
    if channel is None or not channel["ready"] or channel["htlcs"] or channel["remote_htlcs"] \
            or channel["pending_changes"]:
        return None
    if any(p["status"] == "pending" for p in state["payments"]):
        return None
    return state


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_kill_9_during_a_payment_stream_loses_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    victim_name = "payer" if seed % 2 else "payee"
    chain_path = tmp_path / "chain.sqlite"
    chain = RegtestChain(chain_path)
    fsync = seed > 4  # the last runs commit with synchronous=FULL, the others with fsync off
    payee = RunnerProcess(tmp_path / "payee", chain_path, port=free_port(), fsync=fsync)
    payer = RunnerProcess(tmp_path / "payer", chain_path, fsync=fsync)
    try:
        cid = _open_channel(chain, payer, payee)
        invoices: list[str] = payee.call("invoices", amount_msat=AMOUNT_MSAT, count=PAYMENTS)["invoices"]
        wait_until(lambda: payer.call("state")["channels"][cid]["ready"])

        # The stream: payments go out back to back, many in flight; the kill lands somewhere in it.
        kill_after = rng.uniform(0.02, 0.4)
        start = time.monotonic()
        sent = 0
        for invoice in invoices:
            payer.send("pay", invoice=invoice, timeout=20)
            sent += 1
            time.sleep(rng.uniform(0, 0.01))
            if time.monotonic() - start > kill_after:
                break
        victim = payer if victim_name == "payer" else payee
        victim.kill()
        time.sleep(rng.uniform(0, 0.2))
        victim.restart()
        at_restart = payer.call("state")["channels"][cid]  # (the payer's view: in flight is counted)
        assert at_restart["local_msat"] + at_restart["remote_msat"] + at_restart["htlc_msat"] == FUNDING_SAT * 1000

        # Ask again for every invoice: a paid one must be refused, the rest may go through.
        retries = [payer.send("pay", invoice=invoice, timeout=20) for invoice in invoices]
        answers = [payer.answer(r, timeout=40) for r in retries]
        refused = [a for a in answers if "already paid" in a.get("error", "")]

        payer_state = wait_until(lambda: _quiet(payer, cid), timeout=30)
        payee_state = wait_until(lambda: _quiet(payee, cid), timeout=30)
    finally:
        payer.stop()
        payee.stop()

    statuses = {p["payment_hash"]: p["status"] for p in payer_state["payments"]}
    assert set(statuses.values()) <= {"succeeded", "failed"}  # none pending, none lost
    succeeded = {h for h, s in statuses.items() if s == "succeeded"}
    paid = {i["payment_hash"] for i in payee_state["invoices"] if i["status"] == "paid"}
    assert succeeded == paid  # each paid invoice was paid by exactly one succeeded payment
    assert all(i["received_msat"] == AMOUNT_MSAT for i in payee_state["invoices"] if i["status"] == "paid")
    assert len(refused) <= len(succeeded) and sent > 0
    total_msat = len(paid) * AMOUNT_MSAT
    ours, theirs = payer_state["channels"][cid], payee_state["channels"][cid]
    assert ours["capacity_msat"] == theirs["capacity_msat"] == FUNDING_SAT * 1000
    assert theirs["local_msat"] == total_msat == ours["remote_msat"]
    assert ours["local_msat"] == theirs["remote_msat"] == FUNDING_SAT * 1000 - total_msat
    assert ours["htlc_msat"] == theirs["htlc_msat"] == 0
