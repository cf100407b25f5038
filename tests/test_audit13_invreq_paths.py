"""BOLT 12 (reader of an invoice request, an offer without `offer_paths`): "MUST ignore any
invoice_request if it arrived via a blinded path". Our offers name only `offer_issuer_id`; a
request sent over a path the payee made for something else (a refund's path) must go
unanswered, or its answer would tie that path to the payee's node id.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from lightspeed.node.offers_flow import INVOICE, INVOICE_REQUEST
from lightspeed.offers import request_invoice
from tests.test_onionmsg_node import _line


def test_an_invoice_request_over_a_path_the_payee_made_is_ignored_and_a_direct_one_answered() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        try:
            offer = d.offers.create_offer("no paths", 10_000)
            path, _path_id = d.onion_messages.blinded_path_to_us()  # as a refund of D's publishes
            invreq = request_invoice(offer, payer_key=os.urandom(32), metadata=os.urandom(16),
                                     chain=d.network.chain_hash)
            with pytest.raises(TimeoutError):
                await a.onion_messages.request(path, [(INVOICE_REQUEST, invreq.to_tlv())], timeout=1.5, attempts=1)
            assert d.onion_messages.dropped["invoice_request_via_our_path"] == 1
            # The same request to D's node id (the offer's offer_issuer_id) is answered.
            reply = await a.onion_messages.request(d.node_id, [(INVOICE_REQUEST, invreq.to_tlv())], timeout=10)
            assert reply.tlv_type == INVOICE
        finally:
            await net.stop()

    asyncio.run(scenario())
