"""BOLT 12 over onion messages between real nodes (loopback TCP): invoice request -> invoice.

D makes an offer; A fetches an invoice for it over A-B-C-D and checks it against its request;
D refuses requests for offers it did not make (invoice_error, named field), the payer refuses
expired and wrong-chain offers itself, a silent payee costs the payer its timeout after every
attempt, and offers survive a restart (their metadata authenticates them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import pytest

from lightspeed.bitcoin.network import BITCOIN, REGTEST
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, PaymentError
from lightspeed.node.node import Node
from lightspeed.offers import build_offer, decode_offer
from tests.test_onionmsg_node import _line


def test_a_payer_fetches_an_invoice_over_three_hops_and_checks_it_against_its_request() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        try:
            offer = decode_offer(d.offers.create_offer("a coffee", 10_000, quantity_max=5).encode())
            assert offer.chains == (REGTEST.chain_hash,) and offer.issuer_id == d.node_id
            fetched = await a.offers.fetch_invoice(offer, quantity=2, payer_note="two", timeout=10)
            invoice = fetched.invoice
            assert invoice.amount_msat == 20_000 and invoice.node_id == d.node_id and invoice.signature_valid
            assert invoice.request == fetched.request.without_signatures()  # every field copied
            stored = d.store.invoice(invoice.payment_hash)  # committed before the invoice left
            assert stored is not None and sha256(stored.preimage) == invoice.payment_hash
            (two_hop, payinfo), (one_hop, _), (own, _) = invoice.usable_paths  # via B then C, via C, from D
            assert [p.first_node_id for p in (two_hop, one_hop, own)] == [n.node_id for n in net.nodes[1:]]
            assert payinfo.htlc_minimum_msat == 1
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_the_payee_answers_an_offer_it_did_not_make_with_an_invoice_error() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        try:
            forged = build_offer(issuer_id=d.node_id, description="not D's", amount_msat=1,
                                 chains=[REGTEST.chain_hash], metadata=os.urandom(48))
            with pytest.raises(PaymentError, match="refused the invoice request: offer_metadata"):
                await a.offers.fetch_invoice(forged, timeout=10)
            genuine = d.offers.create_offer("genuine", 1_000)
            tampered = dataclasses.replace(genuine, amount=1)  # same metadata, a lower price
            with pytest.raises(PaymentError, match="offer_metadata"):
                await a.offers.fetch_invoice(tampered, timeout=10)
            assert d.store.invoices() == []  # no invoice was issued
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_expired_and_wrong_chain_offers_are_refused_before_anything_is_sent() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        try:
            expired = d.offers.create_offer("late", 1_000, absolute_expiry=int(time.time()) - 1)
            with pytest.raises(DecodeError, match="offer_absolute_expiry"):
                await a.offers.fetch_invoice(expired)
            mainnet = build_offer(issuer_id=d.node_id, description="mainnet", amount_msat=1_000,
                                  chains=[BITCOIN.chain_hash])
            with pytest.raises(DecodeError, match="offer_chains"):
                await a.offers.fetch_invoice(mainnet)
            assert a.onion_messages.counts["sent"] == 0
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_silent_payee_times_out_after_every_attempt() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        del d.onion_messages._handlers[64]  # D no longer answers invoice requests
        try:
            offer = d.offers.create_offer("silence", 1_000)
            began = time.monotonic()
            with pytest.raises(TimeoutError, match="3 attempts"):
                await a.offers.fetch_invoice(offer, timeout=0.9, attempts=3)
            assert time.monotonic() - began < 3
            assert d.onion_messages.counts["received"] == 3 and d.onion_messages.counts["unhandled"] == 3
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_offers_survive_a_restart_and_their_fields_cannot_be_changed() -> None:
    chain = RegtestChain(":memory:")
    key = sha256(b"offer maker")
    offer = Node(key, chain, sha256(b"w")).offers.create_offer("kept", 5_000)
    again = Node(key, chain, sha256(b"w"))  # the same node key after a restart, nothing stored
    assert again.offers.is_ours(decode_offer(offer.encode()))
    assert not again.offers.is_ours(dataclasses.replace(offer, description="changed"))
    assert not Node(sha256(b"another"), chain, sha256(b"w")).offers.is_ours(offer)
