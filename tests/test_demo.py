"""`lightspeed demo` is the README's first command: every scenario must run and succeed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_json_reports_every_scenario_ok() -> None:
    result = subprocess.run([sys.executable, "-m", "lightspeed.cli", "demo", "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [s["name"] for s in report["scenarios"]]
    assert len(names) >= 5 and all(s["ok"] for s in report["scenarios"]), report
    by_name = {s["name"]: s for s in report["scenarios"]}
    assert by_name["BOLT 11: sign, decode, prove payment"]["proof_of_payment"] == "verified"
    assert any(s.get("forged_signature_rejected", "").endswith("signature does not verify") for s in report["scenarios"])
    assert "Asynchronous payment: A pays offline B through two LSPs" in by_name
    streaming = by_name["Streaming: charge, cut payment, delivery stops, unused credit refunded to an anonymous payer"]
    assert streaming["delivery_stopped_within_one_tick"] and streaming["payer_anonymous_to_charger"]
    assert streaming["refunded_msat"] == streaming["refund_received_msat"] == streaming["prepaid_msat"] - \
        streaming["paid_by_links_msat"] > 0


def test_demo_tables_for_people() -> None:
    result = subprocess.run([sys.executable, "-m", "lightspeed.cli", "demo"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Lightspeed demo" in result.stdout and "Asynchronous payment" in result.stdout
