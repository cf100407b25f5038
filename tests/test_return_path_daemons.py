"""Private refunds end to end between daemon processes (CLI and REST): issue 15, part 3.

Three ``lightspeed node start`` processes on one regtest chain, A - B - D, channels announced.
A pays D's invoice with ``pay --return-path``; D refunds part of it with ``refund send`` (the
refund reaches A through the blinded return path introduced by B), and is refused, naming
``amount_msat``, when it asks for more than is left (CLI: ``error: ...``, exit 1; REST: 409).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for
from tests.test_offerpay_daemons import refused, rest

__all__ = ["started"]  # the fixture, used by name below


@pytest.mark.slow
def test_pay_with_a_return_path_then_refund_send_between_daemons(tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("a", "b", "d"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    a, _b, d = (daemon.datadir for daemon in started)
    open_line(started, chain, "3000000", "2000000", "--push-msat", "500000000")

    invoice = call(d, "invoice", "new", "60000", "a tea")
    wait_for("A never paid D (gossip)",
             lambda: lightspeed(a, "pay", invoice["invoice"], "--return-path", "--timeout", "10",
                                check=False).returncode == 0, seconds=90)
    payment_hash = invoice["payment_hash"]

    def refunded() -> bool:  # D must learn B's channels by gossip to reach the path's introduction node
        result = lightspeed(d, "refund", "send", payment_hash, "25000", "--timeout", "10", check=False)
        assert "more than" not in result.stderr, result.stderr
        return result.returncode == 0

    wait_for("D never refunded through the return path", refunded, seconds=90)
    assert "error: amount_msat: 40000 msat is more than the 35000 msat left to refund" in refused(
        d, "refund", "send", payment_hash, "40000")
    status, body = rest(d, "POST", "/v1/refunds/send", {"payment_hash": payment_hash, "amount_msat": 35_001})
    assert status == 409 and body["error"]["field"] == "amount_msat"
    status, body = rest(d, "POST", "/v1/refunds/send", {"payment_hash": payment_hash, "amount_msat": 35_000})
    assert status == 200 and body["refunded_msat"] == 60_000 == body["received_msat"]
    assert "error: payment_hash: no payment was received" in refused(d, "refund", "send", "00" * 32, "1")
    received = [p for p in call(a, "payments", "--direction", "received")["payments"]]
    assert sorted(p["amount_msat"] for p in received) == [25_000, 35_000]
