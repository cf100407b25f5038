"""Multi-hash requests between real nodes on loopback TCP (issue 15 part 4).

A line A - B - C with SQLite stores: C (payee) signs a request of three parts; A pays them one
after the other, but the channel B - C can carry only two. From there the payment converges,
provably, either way:

* all refunded: A signs a refund declaration (the two preimages prove what C received), C checks
  it and pays both parts back through A's blinded return path; the settle result carries each
  refund's invoice and preimage (the proof A was paid back), and the failed part can no longer
  be paid;
* all paid: liquidity comes back to B, A pays the failed part again, and C's status says the
  request is complete (deliver).

A declaration with a wrong preimage, one signed by a forwarding node that learned the preimages,
and a replayed declaration change nothing.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path

import pytest

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError
from lightspeed.multihash import (
    DeclarationError,
    Outcome,
    RefundDeclaration,
    SignedDeclaration,
    SignedRequest,
    sign_declaration,
)
from lightspeed.node.node import Node
from lightspeed.offers import decode_invoice as decode_bolt12_invoice
from lightspeed.store import InvoiceRecord, SqliteStore
from tests.support.network import Network, create_network, restart_from_disk, until
from tests.test_api import api, error
from tests.test_onionmsg_node import _announce

SAT = 1_000_000
PUSH = 500_000_000
PART = 600_000_000  # B can forward two of these to C, not three


async def _line(datadir: Path | None = None) -> Network:
    net = await create_network(3, [(0, 1, 5 * SAT, PUSH), (1, 2, 2 * SAT, PUSH)], datadir=datadir)
    _announce(net)
    return net


def _received_by(node: Node) -> int:
    return sum(i.received_msat for i in node.store.invoices() if i.status == "paid")


async def _partly_paid(net: Network) -> SignedRequest:
    a, c = net.nodes[0], net.nodes[2]
    request = c.multihash.create([PART, PART, PART], "80 kWh of charging", expiry=600)
    # The payer sees only the document: decode it from JSON, as it would arrive.
    request = SignedRequest.from_json(request.to_json())
    paid = await a.multihash.pay(request, timeout=15)
    assert [p.status for p in paid] == ["succeeded", "succeeded", "failed"], paid
    assert all(sha256(p.preimage) == p.payment_hash for p in paid[:2] if p.preimage)
    status = c.multihash.status(request)
    assert status["state"] == "open" and not status["deliver"] and status["paid_msat"] == 2 * PART
    return request


def test_a_partly_paid_request_converges_to_all_refunded(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a, b, c = net.nodes
        try:
            request = await _partly_paid(net)
            signed = a.multihash.declare(request)
            d = signed.declaration
            assert d.refund_msat == 2 * PART and d.payer_key != a.node_id
            assert [o.succeeded for o in d.parts] == [True, True, False]
            signed = SignedDeclaration.from_json(signed.to_json())  # as it travels
            payments_before = len(c.store.payments())

            # A wrong preimage, signed with the right key: refused, nothing cancelled or paid.
            secret = a.return_paths.signing_key(a.return_paths.nonce_for(request.request_id))
            wrong = dataclasses.replace(d, parts=(Outcome(d.parts[0].payment_hash, bytes(32)), *d.parts[1:]))
            with pytest.raises(DeclarationError, match=r"parts\[0\]\.preimage: does not hash"):
                await c.multihash.settle(sign_declaration(wrong, secret))
            # B forwarded both parts and knows their preimages, but not the key A committed to.
            stolen = RefundDeclaration(request, b.node_id, d.parts, b.return_paths.create().encode(), d.declared_at)
            with pytest.raises(DeclarationError, match="payer_key: not the key committed"):
                await c.multihash.settle(sign_declaration(stolen, b.privkey))
            # The right declaration with its signature wiped.
            with pytest.raises(DeclarationError, match="signature: not payer_key's signature"):
                await c.multihash.settle(dataclasses.replace(signed, signature=bytes(64)))
            assert c.multihash.status(request)["state"] == "open" and len(c.store.payments()) == payments_before

            a_before = _received_by(a)
            result = await c.multihash.settle(signed, timeout=20)
            assert result["state"] == "refunded" and result["refunded_msat"] == 2 * PART == result["refund_msat"]
            proofs = [r for p in result["parts"] for r in p["refunds"]]
            assert sum(r["amount_msat"] for r in proofs) == 2 * PART
            for proof in proofs:  # each refund: an invoice signed by A's return-path key, and its preimage
                invoice = decode_bolt12_invoice(proof["invoice"])
                assert proof["status"] == "succeeded" and sha256(bytes.fromhex(proof["preimage"])) == invoice.payment_hash
            await until(lambda: _received_by(a) == a_before + 2 * PART, 20)
            assert [p["status"] for p in result["parts"]] == ["paid", "paid", "cancelled"]
            # C never learned who paid: A's node id is nowhere in its store files.
            files = [f.read_bytes() for f in (tmp_path / "node2").rglob("*") if f.is_file()]
            assert files and not any(i in blob for blob in files for i in (a.node_id, a.node_id.hex().encode()))

            # Replayed (after a restart too): nothing more is paid.
            c = await restart_from_disk(net, 2)
            await until(lambda: all(c.channel_is_ready(ch) for ch in c.channels), 20)
            again = await c.multihash.settle(signed, timeout=20)
            assert again["refunded_msat"] == 2 * PART and len(c.store.payments()) == payments_before + 2
            # The failed part's invoice is gone: with liquidity back at B (the refunds moved it), paying
            # it now is refused by C (unknown payment), and the request stays refunded.
            third = await a.multihash.pay(request, timeout=10)
            assert third[2].status == "failed" and "the payee refused the payment (failure code 0x400f)" in third[2].reason
            assert c.multihash.status(request)["state"] == "refunded"
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_partly_paid_request_converges_to_all_paid() -> None:
    async def scenario() -> None:
        net = await _line()
        a, b, c = net.nodes
        try:
            request = await _partly_paid(net)
            # Liquidity comes back to B's side of B - C: C pays B.
            await c.pay(b.create_invoice(PART, "rebalance"), timeout=15)
            paid = await a.multihash.pay(request, timeout=15)  # only the failed part is paid again
            assert [p.status for p in paid] == ["succeeded"] * 3
            status = c.multihash.status(request)
            assert status["state"] == "complete" and status["deliver"] and status["paid_msat"] == 3 * PART
            # A holds all three preimages: the proof it paid the whole request.
            assert all(p.preimage is not None and sha256(p.preimage) == p.payment_hash for p in paid)
            with pytest.raises(UsageError, match="every part succeeded"):
                a.multihash.declare(request)
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_the_rest_routes_take_the_same_path_and_name_bad_fields() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, c = net.nodes
        try:
            async with api(a) as payer, api(c) as payee:
                bad = await payee.post("/v1/multihash", json={"amounts_msat": [PART, 0]})
                assert bad.status_code == 400 and error(bad)["field"] == "amounts_msat[1]"
                created = await payee.post("/v1/multihash", json={"amounts_msat": [PART, PART, PART],
                                                                    "delivers": "80 kWh", "expiry_s": 600})
                assert created.status_code == 201, created.text
                document = created.json()
                checked = await payer.post("/v1/multihash/verify", json={"document": document})
                assert checked.json()["kind"] == "request" and checked.json()["total_msat"] == 3 * PART
                paid = await payer.post("/v1/multihash/pay", json={"request": document, "timeout_s": 15})
                assert [p["status"] for p in paid.json()["parts"]] == ["succeeded", "succeeded", "failed"]
                declared = await payer.post("/v1/multihash/declare", json={"request": document})
                assert declared.status_code == 200, declared.text
                declaration = declared.json()
                assert (await payer.post("/v1/multihash/verify", json={"document": declaration})).json()[
                    "refund_msat"] == 2 * PART
                tampered = copy.deepcopy(declaration)
                tampered["declaration"]["parts"][0]["preimage"] = "00" * 32
                refused = await payee.post("/v1/multihash/settle", json={"declaration": tampered})
                assert refused.status_code == 400 and error(refused)["field"] == "signature"  # altered after signing
                # The same declaration twice at once: one settlement runs, the other finds nothing left.
                settled, twice = await asyncio.gather(
                    payee.post("/v1/multihash/settle", json={"declaration": declaration, "timeout_s": 20}),
                    payee.post("/v1/multihash/settle", json={"declaration": declaration, "timeout_s": 20}))
                assert settled.status_code == twice.status_code == 200, (settled.text, twice.text)
                assert twice.json()["refunded_msat"] == 2 * PART
                assert [p["error"] for r in (settled, twice) for p in r.json()["parts"]] == [None] * 6
                assert settled.json()["state"] == "refunded" and settled.json()["refunded_msat"] == 2 * PART
                status = await payee.post("/v1/multihash/status", json={"request": document})
                assert status.json()["state"] == "refunded" and not status.json()["deliver"]
                again = await payee.post("/v1/multihash/settle", json={"declaration": declaration})
                assert again.json()["refunded_msat"] == 2 * PART
                assert len([p for p in c.store.payments() if p.status == "succeeded"]) == 2
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_cancel_invoice_deletes_an_unpaid_invoice_and_keeps_a_paid_one() -> None:
    store = SqliteStore(":memory:")
    unpaid = InvoiceRecord(bytes([1]) * 32, "lnbcrt1...", bytes(32), bytes(32), 1_000)
    paid = dataclasses.replace(unpaid, payment_hash=bytes([2]) * 32, status="paid", received_msat=1_000)
    with store.transaction():
        store.put_invoice(unpaid)
        store.put_invoice(paid)
        assert store.cancel_invoice(unpaid.payment_hash) and not store.cancel_invoice(paid.payment_hash)
        assert not store.cancel_invoice(bytes(32))
    assert store.invoice(unpaid.payment_hash) is None and store.invoice(paid.payment_hash) == paid
