"""BOLT 12 (reader of an invoice request, an offer without `offer_paths`): "MUST ignore any
invoice_request if it arrived via a blinded path". Our offers name only `offer_issuer_id`; a
request sent over a path the payee made for something else (a refund's path) must go
unanswered, or its answer would tie that path to the payee's node id. And the payer's side: an
offer with `offer_paths` is asked over those paths, one after the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node.offers_flow import INVOICE, INVOICE_REQUEST
from lightspeed.node.onion_messenger import InboundOnionMessage
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


def test_the_payer_sends_its_request_over_the_offers_paths_and_moves_to_the_next_after_a_silent_one() -> None:
    """BOLT 12 (reader of an offer): if `offer_paths` is set: MUST send the onion message via any
    path in `offer_paths` (even when `offer_issuer_id` is set too). The first path is broken (its
    introduction node C cannot open it): A's second attempt goes over the second path."""

    async def scenario() -> None:
        net = await _line()
        a, _, c, d = net.nodes
        try:
            good, path_id = d.onion_messages.blinded_path_to_us()  # introduced by C, D's peer
            assert good.first_node_id == c.node_id
            bad = dataclasses.replace(good, first_path_key=pubkey_from_privkey(os.urandom(32)))
            plain = d.offers.create_offer("over paths", 10_000)
            nonce = (plain.metadata or b"")[:16]
            with_paths = dataclasses.replace(plain, paths=(bad, good))
            offer = dataclasses.replace(with_paths, metadata=nonce + d.offers._tag(nonce, with_paths))
            assert d.offers.is_ours(offer) and offer.issuer_id == d.node_id

            arrived: list[bytes | None] = []

            async def payee(message: InboundOnionMessage) -> None:  # D's answer, for a request over its path
                arrived.append(message.path_id)
                if message.path_id == path_id:
                    invoice = d.offers.answer(message.value(INVOICE_REQUEST) or b"")
                    await d.onion_messages.reply(message, [(INVOICE, invoice.to_tlv())])

            d.onion_messages.register(INVOICE_REQUEST, payee)
            fetched = await a.offers.fetch_invoice(offer, timeout=4, attempts=2)
            assert fetched.invoice.node_id == d.node_id and fetched.invoice.amount_msat == 10_000
            assert arrived == [path_id]  # never sent to D's node id; the broken path never got there
            assert c.onion_messages.dropped["invalid"] == 1  # the first attempt, over the broken path
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_refunds_invoice_goes_over_its_next_path_when_the_first_is_silent() -> None:
    """BOLT 12 (writer of an invoice for a refund): if `invreq_paths` is present: MUST send the
    invoice using those paths. The refund's first path is broken; D's second attempt uses the second."""

    async def scenario() -> None:
        net = await _line()
        a, b, _, d = net.nodes
        try:
            refund = a.refunds.create(12_000, "two paths")
            (good,) = refund.paths or ()
            bad = dataclasses.replace(good, first_path_key=pubkey_from_privkey(os.urandom(32)))
            two = dataclasses.replace(refund, paths=(bad, good))
            record = a.store.refund(refund.payer_id or b"")
            assert record is not None
            with a.store.transaction():  # A published this one (the same refund, with a path in front)
                a.store.put_refund(dataclasses.replace(record, refund=two.encode()))
            answered = await d.refunds.pay(two.encode(), timeout=6, attempts=2)
            assert answered.paid and answered.invoice.amount_msat == 12_000
            assert b.onion_messages.dropped["invalid"] == 1  # the first attempt, over the broken path
        finally:
            await net.stop()

    asyncio.run(scenario())
