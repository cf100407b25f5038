"""End to end between daemon processes over TCP: paying BOLT 12 offers and refunds (issue 13).

Four ``lightspeed node start`` processes share one regtest chain: A - B - C - D, channels
announced by gossip. D makes offers; A is connected to B only, so its invoice request crosses
three onion-message hops (B, C, D) and the invoice comes back the same way; D's invoice path is
introduced by B (B, C, then D and a dummy hop), and A pays over it. A refund created by A is
claimed by D (paid once, a second claim refused); expired and wrong-chain offers and an expired
refund are refused with ``error: <field>: <reason>`` (CLI, exit 1) and a 400 naming the field (REST).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightspeed.api.datadir import Datadir
from lightspeed.bitcoin.network import BITCOIN
from lightspeed.crypto.hashes import sha256
from lightspeed.offers import build_offer
from tests.test_daemon import Daemon, call, lightspeed, open_line, started, wait_for

__all__ = ["started"]  # the fixture, used by name below


def rest(datadir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    store = Datadir(datadir)
    response = httpx.request(method, store.api_url() + path, json=body, timeout=120,
                             headers={"Authorization": f"Bearer {store.token()}"})
    return response.status_code, response.json()


def refused(datadir: Path, *args: str) -> str:
    """The stderr of a CLI command that must fail with exit status 1 (one line, no traceback)."""
    result = lightspeed(datadir, *args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.slow
def test_offers_and_refunds_are_paid_between_four_daemons(tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("a", "b", "c", "d"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    a, b, c, d = (daemon.datadir for daemon in started)
    ids = [daemon.ready["node_id"] for daemon in started]
    open_line(started, chain, "3000000", "2000000")

    offer = call(d, "offer", "create", "25000", "a book", "--quantity-max", "3")["offer"]

    def introduced_by_b() -> bool:  # A must learn D by gossip, D must learn B -> C's channel_update
        fetched = lightspeed(a, "offer", "fetch-invoice", offer, "--quantity", "1", "--timeout", "10", check=False)
        if fetched.returncode != 0:
            return False
        decoded = call(a, "offer", "decode", json.loads(fetched.stdout)["invoice"])
        return bool(decoded["invoice_paths"][0]["first_node_id"] == ids[1])

    wait_for("A never fetched an invoice whose path B introduces", introduced_by_b, seconds=90)
    assert [p["node_id"] for p in call(a, "peers")["peers"]] == [ids[1]]  # the request crossed B, C, D
    assert call(b, "onion-message", "stats")["relayed"] >= 2 and call(c, "onion-message", "stats")["relayed"] >= 2

    # Offer paid over the blinded path B - C - D (CLI), with the proof of payment.
    before_b = call(b, "channels")["channels"]
    paid = call(a, "offer", "pay", offer, "--quantity", "2", "--payer-note", "for the shelf")
    assert paid["status"] == "succeeded" and paid["amount_msat"] == 50_000 and paid["payee"] == ids[3]
    assert sha256(bytes.fromhex(paid["preimage"])).hex() == paid["payment_hash"]
    invoice = call(a, "offer", "decode", paid["invoice"])
    assert invoice["type"] == "invoice" and invoice["signature_valid"] is True
    assert invoice["invoice_payment_hash"] == paid["payment_hash"] and invoice["invreq_quantity"] == 2
    assert invoice["invoice_paths"][0]["first_node_id"] == ids[1] and paid["fee_msat"] > 0
    tracked = call(a, "trackpayment", paid["payment_hash"])
    assert tracked["status"] == "succeeded" and tracked["preimage"] == paid["preimage"]
    received = {p["payment_hash"]: p["amount_msat"] for p in call(d, "payments", "--direction", "received")["payments"]}
    assert received[paid["payment_hash"]] >= 50_000
    after_b = call(b, "channels")["channels"]
    assert sum(ch["local_balance_msat"] for ch in after_b) > sum(ch["local_balance_msat"] for ch in before_b)

    # The REST mirror, for an offer without an amount.
    tip = call(d, "offer", "create", "any", "tips")["offer"]
    status, body = rest(a, "POST", "/v1/offers/pay", {"offer": tip, "amount_msat": 7_000, "payer_note": "thanks"})
    assert status == 200 and body["status"] == "succeeded" and body["invoice"].startswith("lni1"), body

    # Refused before anything is sent or paid: an expired offer, an offer for another chain.
    expired = call(d, "offer", "create", "1000", "too late", "--absolute-expiry", "1")["offer"]
    assert refused(a, "offer", "pay", expired).startswith("error: offer_absolute_expiry: the offer expired at 1")
    status, body = rest(a, "POST", "/v1/offers/pay", {"offer": expired})
    assert status == 400 and body["error"]["field"] == "offer_absolute_expiry", body
    mainnet = build_offer(issuer_id=bytes.fromhex(ids[3]), description="mainnet", amount_msat=1_000,
                          chains=[BITCOIN.chain_hash]).encode()
    assert refused(a, "offer", "pay", mainnet).startswith("error: offer_chains: none of the offer's chains")
    status, body = rest(a, "POST", "/v1/offers/pay", {"offer": mainnet})
    assert status == 400 and body["error"]["field"] == "offer_chains", body

    # A refund: A owes 30,000 msat; D claims it; A pays it once.
    refund = call(a, "refund", "create", "30000", "--description", "a returned mug")
    assert refund["status"] == "open" and refund["refund"].startswith("lnr1")
    claimed = call(d, "refund", "pay", refund["refund"])
    assert claimed["status"] == "paid" and claimed["amount_msat"] == 30_000
    wait_for("A's refund never showed as paid", lambda: call(a, "refund", "list")["refunds"][0]["status"] == "paid")
    assert call(a, "refund", "list")["refunds"][0]["payment_hash"] == claimed["payment_hash"]
    again = refused(d, "refund", "pay", refund["refund"], "--timeout", "10")
    assert again.startswith("error: refund: the refund's payer refused our invoice: refund: already paid"), again
    sent = [p for p in call(a, "payments", "--direction", "sent")["payments"] if p["amount_msat"] == 30_000]
    assert len(sent) == 1

    # The REST mirrors, and an expired refund refused by its payee.
    status, made = rest(a, "POST", "/v1/refunds", {"amount_msat": 4_000, "absolute_expiry": int(time.time()) + 2})
    assert status == 201 and made["status"] == "open", made
    time.sleep(3)
    assert refused(d, "refund", "pay", made["refund"]).startswith("error: offer_absolute_expiry: the refund expired")
    status, body = rest(d, "POST", "/v1/refunds/pay", {"refund": made["refund"]})
    assert status == 400 and body["error"]["field"] == "offer_absolute_expiry", body
    status, made = rest(a, "POST", "/v1/refunds", {"amount_msat": 5_000, "description": "over REST"})
    status, body = rest(d, "POST", "/v1/refunds/pay", {"refund": made["refund"], "timeout_s": 30})
    assert status == 200 and body["status"] == "paid", body
