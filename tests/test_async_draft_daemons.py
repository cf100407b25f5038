"""Issue 14, Flow 2 (the draft spec) between four `lightspeed node start` processes on one regtest chain:
A - LSP_a (--lsp) - LSP_b (--lsp) - B. B registers with LSP_b and makes an offer whose static invoice
LSP_b keeps (`offer create --static-via`), then goes offline; A pays the offer (`offer pay`): LSP_b
answers with the static invoice, LSP_a holds A's HTLC (`lsp held`) and A goes offline too; B comes
back, gets `held_htlc_available` from LSP_b's mailbox, releases; B is paid; A comes back: succeeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightspeed.asyncpay.lsps5 import ONION_MESSAGE_INCOMING
from lightspeed.crypto.hashes import sha256
from tests.test_async14_webhooks import Receiver, serve
from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for
from tests.test_wire14_daemons import methods, reaches, registered

__all__ = ["started"]  # the fixture, used by name

AMOUNT = 40_000_000


@pytest.mark.slow
def test_four_daemons_offer_paid_through_a_static_invoice_while_payee_and_payer_are_offline(
        tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    lsp_flags = ("--lsp", "--lsp-max-hold-seconds", "600")
    for name, extra in (("a", ()), ("lsp_a", lsp_flags), ("lsp_b", lsp_flags), ("b", ())):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels", *extra))
    a, lsp_a, lsp_b, b = (daemon.datadir for daemon in started)
    ids = [daemon.ready["node_id"] for daemon in started]
    open_line(started, chain, "2000000", "1000000")
    hooks_b = Receiver(fail_first=2)  # B's push service fails twice: LSP_b retries with backoff
    with serve(hooks_b) as url_b:
        wait_for("B never registered with LSP_b", lambda: registered(b, ids[2], url_b))
        wait_for("A never reached LSP_b by onion message (gossip)", lambda: reaches(a, ids[2]), seconds=60)
        wait_for("B never reached LSP_a by onion message (gossip)", lambda: reaches(b, ids[1]), seconds=60)
        refused = lightspeed(b, "offer", "create", "any", "tips", "--static-via", ids[2], check=False)
        assert refused.returncode != 0 and "amount_msat" in refused.stderr and "Traceback" not in refused.stderr
        offer = call(b, "offer", "create", f"{AMOUNT}msat", "coffee while away", "--static-via", ids[2])
        assert offer["static_invoice_lsp"] == ids[2] and offer["amount_msat"] == AMOUNT
        b_listen = started[3].ready["listen"]
        started[3].stop()  # B goes offline; LSP_b answers for its offer

        pending = lightspeed(a, "offer", "pay", offer["offer"], "--timeout", "3", check=False)
        assert pending.returncode != 0 and "held until the payee is back online" in pending.stderr
        wait_for("LSP_a never held the HTLC", lambda: len(call(lsp_a, "lsp", "held")["held"]) == 1)
        held = call(lsp_a, "lsp", "held")["held"][0]
        assert held["client_id"] == ids[0] and held["amount_msat"] >= AMOUNT
        wait_for("LSP_b never woke B", lambda: methods(hooks_b).count(ONION_MESSAGE_INCOMING) == 3)
        retried = [at for at, _headers, body in hooks_b.calls if ONION_MESSAGE_INCOMING in body]
        assert retried[1] - retried[0] >= 1.0 and retried[2] - retried[1] >= retried[1] - retried[0]  # backoff
        payments = call(a, "payments", "--direction", "sent")["payments"]
        assert [(p["payment_hash"], p["status"]) for p in payments] == [(held["payment_hash"], "pending")]
        a_listen = started[0].ready["listen"]
        started[0].stop()  # A goes offline too, its HTLC held at LSP_a

        started[3] = Daemon(b, chain, b_listen, "--announce-channels")  # B is back
        wait_for("B was never paid", lambda: "paid" in [i["status"] for i in call(b, "invoice", "list")["invoices"]],
                 seconds=60)
        wait_for("LSP_a still holds the HTLC", lambda: call(lsp_a, "lsp", "held")["held"] == [])

        started[0] = Daemon(a, chain, a_listen, "--announce-channels")  # A is back
        wait_for("A's payment never succeeded", lambda: [p["status"] for p in call(
            a, "payments", "--direction", "sent")["payments"]] == ["succeeded"], seconds=60)
        payment = call(a, "payments", "--direction", "sent")["payments"][0]
        assert sha256(bytes.fromhex(payment["preimage"])).hex() == held["payment_hash"]
        for datadir in (a, lsp_a, lsp_b, b):
            assert {ch["state"] for ch in call(datadir, "channels")["channels"]} == {"normal"}  # no force close
