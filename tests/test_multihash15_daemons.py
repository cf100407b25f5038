"""Multi-hash requests end to end between daemon processes through the CLI (issue 15 part 4).

Three ``lightspeed node start`` processes on one regtest chain, A - B - C, channels announced.
C creates a request of three parts; A pays, but its channel carries only two; A declares, the
declaration verifies offline, C settles it: A is refunded through its return path, and settling
again pays nothing. Bad files are one ``error:`` line and exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for
from tests.test_offerpay_daemons import refused

__all__ = ["started"]  # the fixture, used by name below

PART = "600000000"  # msat: the 1,500,000,000 msat A and B can send carry two parts, not three


@pytest.mark.slow
def test_create_pay_declare_verify_settle_between_daemons(tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("a", "b", "c"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    a, _b, c = (daemon.datadir for daemon in started)
    ids = [daemon.ready["node_id"] for daemon in started]
    open_line(started, chain, "3000000", "2000000", "--push-msat", "500000000")

    request_file = tmp_path / "request.json"
    created = lightspeed(c, "multihash", "create", PART, PART, PART, "--delivers", "80 kWh", "--expiry", "900")
    request_file.write_text(created.stdout)
    checked = call(a, "multihash", "verify", str(request_file))
    assert checked["kind"] == "request" and checked["valid"] and checked["total_msat"] == 3 * int(PART)

    def two_paid() -> bool:  # A learns B - C by gossip; each run pays only what is not paid yet
        paid = call(a, "multihash", "pay", str(request_file), "--timeout", "10")
        return [p["status"] for p in paid["parts"]] == ["succeeded", "succeeded", "failed"]

    wait_for("A never paid two parts", two_paid, seconds=90)
    declared = lightspeed(a, "multihash", "declare", str(request_file))
    declaration_file = tmp_path / "declaration.json"
    declaration_file.write_text(declared.stdout)
    summary = call(c, "multihash", "verify", str(declaration_file))
    assert summary["kind"] == "declaration" and summary["refund_msat"] == 2 * int(PART)
    assert summary["payer_key"] not in ids  # A's node id appears nowhere: a fresh key signs

    tampered = json.loads(declared.stdout)
    tampered["declaration"]["refund_msat"] = 3 * int(PART)
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    assert "error: declaration.refund_msat: is not the sum" in refused(c, "multihash", "verify",
                                                                       str(tmp_path / "tampered.json"))
    assert "error: declaration.refund_msat" in refused(c, "multihash", "settle", str(tmp_path / "tampered.json"))
    (tmp_path / "junk.json").write_text("{not json")
    assert "error: document: not JSON" in refused(c, "multihash", "verify", str(tmp_path / "junk.json"))
    assert "error: FILE: cannot read" in refused(c, "multihash", "verify", str(tmp_path / "missing.json"))

    def settled() -> bool:  # C must know B's channels (gossip) to reach the return path's introduction node
        result = lightspeed(c, "multihash", "settle", str(declaration_file), "--timeout", "10", check=False)
        return result.returncode == 0 and json.loads(result.stdout)["state"] == "refunded"

    wait_for("C never refunded the declaration", settled, seconds=90)
    status = call(c, "multihash", "status", str(request_file))
    assert status["state"] == "refunded" and not status["deliver"] and status["refunded_msat"] == 2 * int(PART)
    again = call(c, "multihash", "settle", str(declaration_file))
    assert again["refunded_msat"] == 2 * int(PART)
    refunds = [r for p in again["parts"] for r in p["refunds"] if r["status"] == "succeeded"]
    assert sum(r["amount_msat"] for r in refunds) == 2 * int(PART)
    received = call(a, "payments", "--direction", "received")["payments"]
    assert sum(p["amount_msat"] for p in received) == 2 * int(PART)
