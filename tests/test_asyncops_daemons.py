"""Automatic async between three `lightspeed node start` processes on one regtest chain file: A - L - B,
L started with --lsp, every channel private (B is reached through the route hint of its invoice, as a
phone behind its LSP). A and B register with L; B goes offline; a plain `lightspeed pay` of B's invoice
goes asynchronously through L by itself (the CLI says so), L holds the HTLC; B comes back and is paid,
and A's payment ends succeeded with its proof."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightspeed.crypto.hashes import sha256
from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for

__all__ = ["started"]  # the fixture, used by name


def registered(datadir: Path, lsp_id: str) -> bool:
    return lightspeed(datadir, "lsp", "register", lsp_id, check=False).returncode == 0


@pytest.mark.slow
def test_three_daemons_plain_pay_to_an_offline_client_of_our_lsp_goes_async(tmp_path: Path,
                                                                           started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name, extra in (("a", ()), ("l", ("--lsp",)), ("b", ())):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", *extra))
    a, lsp, b = (daemon.datadir for daemon in started)
    ids = [daemon.ready["node_id"] for daemon in started]
    open_line(started, chain, "2000000", "1000000")
    wait_for("A never registered with L", lambda: registered(a, ids[1]))
    wait_for("B never registered with L", lambda: registered(b, ids[1]))
    lsps = call(a, "lsp", "list")["lsps"]  # persisted, and connected now
    assert [(e["lsp_id"], e["connected"], e["webhook"]) for e in lsps] == [(ids[1], True, None)], lsps
    assert call(lsp, "lsp", "list")["lsps"] == []  # L registered with nobody
    wait_for("B's invoice never had its route hint", lambda: call(
        b, "invoice", "decode", call(b, "invoice", "new", "1000", "probe", "--private")["invoice"])["route_hints"]
        != [])
    invoice = call(b, "invoice", "new", "30000000", "paid while away", "--private")
    hints = call(b, "invoice", "decode", invoice["invoice"])["route_hints"]
    assert hints[-1][-1]["pubkey"] == ids[1]  # the last hop enters B from L
    b_listen = started[2].ready["listen"]
    started[2].stop()  # B goes offline

    done = lightspeed(a, "pay", invoice["invoice"])  # no --async: automatic
    paid = json.loads(done.stdout)
    assert paid["status"] == "pending" and paid["async_lsp_id"] == ids[1], paid
    assert paid["payment_hash"] == invoice["payment_hash"] and paid["preimage"] is None
    assert "paid asynchronously through our LSP" in done.stderr
    wait_for("L never held the HTLC", lambda: len(call(lsp, "lsp", "held")["held"]) == 1)

    started[2] = Daemon(b, chain, b_listen)  # B is back: it dials L, collects A's notice, unblocks
    wait_for("B was never paid", lambda: [i["status"] for i in call(b, "invoice", "list")["invoices"]
                                          if i["payment_hash"] == invoice["payment_hash"]] == ["paid"], seconds=60)
    wait_for("A's payment never succeeded", lambda: [p["status"] for p in call(
        a, "payments", "--direction", "sent")["payments"]] == ["succeeded"], seconds=60)
    payment = call(a, "payments", "--direction", "sent")["payments"][0]
    assert sha256(bytes.fromhex(payment["preimage"])).hex() == invoice["payment_hash"]  # A's proof
    assert call(lsp, "lsp", "held")["held"] == []
