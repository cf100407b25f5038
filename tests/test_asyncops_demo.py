"""`lightspeed demo`'s asynchronous-payment scenario (cli/demo_async.py): four in-process nodes, B paid
while offline, A's proof after both came back; the details carry the times."""

from __future__ import annotations

import pytest

from lightspeed.cli.demo import SCENARIOS
from lightspeed.cli.demo_async import AMOUNT_MSAT, async_payment_through_lsps


@pytest.mark.slow
def test_the_async_scenario_pays_offline_b_and_reports_its_times() -> None:
    assert ("Asynchronous payment: A pays offline B through two LSPs", async_payment_through_lsps) in SCENARIOS
    details = async_payment_through_lsps()
    assert details["proof_of_payment"] == "verified" and details["amount_msat"] == AMOUNT_MSAT
    assert details["lsp_a_holds_now"] == 0  # released, nothing left held
    assert details["htlc_held_s"] >= 1.0  # held while both were away (1 s in the demo)
    assert details["capital_locked_msat_s"] >= AMOUNT_MSAT  # the held amount x at least 1 s
    for key in ("held_at_lsp_a_ms", "b_online_to_release_ms", "b_online_to_paid_ms", "a_online_to_proof_ms"):
        assert 0 < details[key] < 10_000, (key, details)
    assert details["b_online_to_release_ms"] <= details["b_online_to_paid_ms"]
