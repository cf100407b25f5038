"""Issue 14, Flow 1 between four `lightspeed node start` processes on one regtest chain file:
A - LSP_a (--lsp) - LSP_b (--lsp) - B, channels announced by gossip, webhooks POSTed to real HTTP
receivers in this process. B registers with LSP_b and goes offline; A registers with LSP_a, pays
B's invoice with `pay --async` and goes offline; LSP_b keeps A's notice and wakes B (its receiver
fails twice first); B comes back, is paid; LSP_a wakes A; A comes back and its payment succeeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightspeed.asyncpay.lsps5 import ONION_MESSAGE_INCOMING, PAYMENT_INCOMING
from lightspeed.crypto.hashes import sha256
from lightspeed.node.onion_messenger import PING_TYPE
from tests.test_async14_webhooks import Receiver, serve
from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for

__all__ = ["started"]  # the fixture, used by name


def methods(receiver: Receiver) -> list[str]:
    return [json.loads(body)["method"] for _, _, body in receiver.calls]


def registered(datadir: Path, lsp_id: str, url: str) -> bool:
    done = lightspeed(datadir, "lsp", "register", lsp_id, "--webhook", url, check=False)
    if done.returncode != 0:
        return False
    limits = json.loads(done.stdout)["limits"]
    assert limits["max_hold_seconds"] == 600 and limits["safety_margin_blocks"] == 12
    return True


def reaches(datadir: Path, node_id: str) -> bool:
    done = lightspeed(datadir, "onion-message", "send", node_id, "--tlv", f"{PING_TYPE}=00", "--reply-path",
                      "--timeout", "4", check=False)
    return done.returncode == 0 and json.loads(done.stdout)["reply"] is not None


@pytest.mark.slow
def test_four_daemons_pay_async_payee_and_payer_offline_then_both_back(tmp_path: Path,
                                                                       started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    lsp_flags = ("--lsp", "--lsp-max-hold-seconds", "600")
    for name, extra in (("a", ()), ("lsp_a", lsp_flags), ("lsp_b", lsp_flags), ("b", ())):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels", *extra))
    a, lsp_a, lsp_b, b = (daemon.datadir for daemon in started)
    ids = [daemon.ready["node_id"] for daemon in started]
    assert started[1].ready["lsp"]["max_hold_seconds"] == 600 and "lsp" not in started[0].ready
    open_line(started, chain, "2000000", "1000000")
    hooks_a, hooks_b = Receiver(fail_first=0), Receiver(fail_first=2)
    with serve(hooks_a) as url_a, serve(hooks_b) as url_b:
        wait_for("A never registered with LSP_a", lambda: registered(a, ids[1], url_a))
        wait_for("B never registered with LSP_b", lambda: registered(b, ids[2], url_b))
        wait_for("A never reached B by onion message (gossip)", lambda: reaches(a, ids[3]), seconds=60)
        wait_for("B never reached LSP_a by onion message (gossip)", lambda: reaches(b, ids[1]), seconds=60)
        invoice = call(b, "invoice", "new", "50000000", "paid while away")
        b_listen = started[3].ready["listen"]
        started[3].stop()  # B goes offline

        refused = lightspeed(lsp_a, "pay", invoice["invoice"], "--async", check=False)  # registered with none
        assert refused.returncode != 0 and "lsp_id" in refused.stderr and "none registered" in refused.stderr
        sent = call(a, "pay", invoice["invoice"], "--async")  # through the LSP A registered with
        assert sent == {"payment_hash": invoice["payment_hash"], "amount_msat": 50_000_000, "lsp_id": ids[1],
                        "status": "pending"}
        wait_for("LSP_a never held the HTLC", lambda: len(call(lsp_a, "lsp", "held")["held"]) == 1)
        held = call(lsp_a, "lsp", "held")
        assert held["held"][0]["payment_hash"] == invoice["payment_hash"]
        assert held["held"][0]["client_id"] == ids[0]
        assert held["clients"] == [{"node_id": ids[0], "webhook": url_a}]
        wait_for("LSP_b never woke B", lambda: methods(hooks_b).count(ONION_MESSAGE_INCOMING) == 3)
        a_listen = started[0].ready["listen"]
        started[0].stop()  # A goes offline too, its HTLC held at LSP_a

        started[3] = Daemon(b, chain, b_listen, "--announce-channels")  # B is back
        wait_for("B was never paid", lambda: [i["status"] for i in call(b, "invoice", "list")["invoices"]]
                 == ["paid"], seconds=60)
        wait_for("LSP_a never woke A", lambda: PAYMENT_INCOMING in methods(hooks_a))
        assert call(lsp_a, "lsp", "held")["held"] == []

        started[0] = Daemon(a, chain, a_listen, "--announce-channels")  # A is back
        wait_for("A's payment never succeeded", lambda: [p["status"] for p in call(
            a, "payments", "--direction", "sent")["payments"]] == ["succeeded"], seconds=60)
        payment = call(a, "payments", "--direction", "sent")["payments"][0]
        assert sha256(bytes.fromhex(payment["preimage"])).hex() == invoice["payment_hash"]  # A's proof
        for datadir in (a, lsp_a, lsp_b, b):
            assert {ch["state"] for ch in call(datadir, "channels")["channels"]} == {"normal"}  # no force close
