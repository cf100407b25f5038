"""Proof of payment for an offer, later (issue 13: "the payer can show the signed invoice and the
preimage"): GET /v1/payments and trackPayment carry the ``lni1...`` the payer paid next to the
preimage, so the proof survives a pay call that returned before the payment settled.
"""

from __future__ import annotations

import asyncio

from lightspeed.crypto.hashes import sha256
from lightspeed.offers import Invoice, decode_bolt12
from tests.support.network import create_network
from tests.test_api import api
from tests.test_onionmsg_node import _announce

SAT = 1_000_000


def test_the_payers_payment_list_shows_the_signed_invoice_beside_the_preimage() -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, 2 * SAT, 0)])
        _announce(net)
        a, d = net.nodes
        try:
            offer = d.offers.create_offer("proof", 7_000)
            async with api(a) as client:
                paid = await client.post("/v1/offers/pay", json={"offer": offer.encode(), "timeout_s": 20})
                assert paid.status_code == 200, paid.text
                payment_hash = paid.json()["payment_hash"]
                listed = (await client.get("/v1/payments", params={"direction": "sent"})).json()["payments"]
                tracked = (await client.get(f"/v1/payments/{payment_hash}/track")).json()
            [entry] = listed
            for shown in (entry, tracked):
                assert shown["invoice"] == paid.json()["invoice"]
                invoice = decode_bolt12(shown["invoice"])  # checks invoice_node_id's signature
                assert isinstance(invoice, Invoice)
                assert invoice.node_id == d.node_id and invoice.request.offer.encode() == offer.encode()
                assert sha256(bytes.fromhex(shown["preimage"])) == invoice.payment_hash
                assert invoice.payment_hash.hex() == payment_hash
            async with api(d) as client:
                received = (await client.get("/v1/payments", params={"direction": "received"})).json()["payments"]
            assert [r["invoice"] for r in received] == [None]  # the payee's own record: nothing to prove
        finally:
            await net.stop()

    asyncio.run(scenario())
