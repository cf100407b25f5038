"""Paying BOLT 12 offers between real nodes (loopback TCP, SQLite stores): issue 13.

A line A-B-C-D: D makes offers; A fetches invoices over onion messages (three hops) and pays them
over the invoice's blinded paths, whose introduction node is B (two real hops, B and C, then a
dummy hop at D). D's invoice payment is in its store before the invoice leaves, so a restart of
D between invoice and payment still settles.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from lightspeed.api.ledger import Timestamps, sent_json
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, PaymentError
from lightspeed.node.offers_flow import check_invoice_amount
from lightspeed.node.queries import is_active
from lightspeed.payments.blinded import amount_at_introduction
from lightspeed.payments.forward import ForwardingPolicy
from tests.support.network import Network, create_network, restart_from_disk, until
from tests.test_onionmsg_node import _announce

SAT = 1_000_000
B_POLICY = ForwardingPolicy(1_000, 100, 40, 1, 900_000_000)
C_POLICY = ForwardingPolicy(2_000, 200, 50, 1_000, 800_000_000)


async def _line(datadir: Path | None = None) -> Network:
    net = await create_network(4, [(0, 1, 2 * SAT, 0), (1, 2, 2 * SAT, 0), (2, 3, 2 * SAT, 0)],
                               policies={1: B_POLICY, 2: C_POLICY}, datadir=datadir)
    _announce(net)
    return net


def test_a_restart_of_the_payee_between_invoice_and_payment_still_settles(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a = net.nodes[0]
        try:
            offer = net.nodes[3].offers.create_offer("kept across a restart", 42_000)
            fetched = await a.offers.fetch_invoice(offer, timeout=10)
            invoice = fetched.invoice
            d = await restart_from_disk(net, 3)  # the payee crashes: memory gone, SQLite file kept
            await until(lambda: all(is_active(d, cid) for cid in d.channels), 20)
            preimage = await a.pay_blinded(invoice.usable_paths, invoice.amount_msat, invoice.payment_hash,
                                           timeout=20)
            assert sha256(preimage) == invoice.payment_hash
            stored = d.store.invoice(invoice.payment_hash)
            assert stored is not None and stored.status == "paid" and stored.received_msat == 42_000
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_invoice_paths_start_two_hops_away_with_a_dummy_hop_and_summed_payinfo() -> None:
    async def scenario() -> None:
        net = await _line()
        a, b, c, d = net.nodes
        try:
            offer = d.offers.create_offer("paths", 1_000_000)
            invoice = (await a.offers.fetch_invoice(offer, timeout=10)).invoice
            (two_hop, info), (one_hop, one_info), (own, own_info) = invoice.usable_paths
            assert [p.first_node_id for p in (two_hop, one_hop, own)] == [b.node_id, c.node_id, d.node_id]
            assert [len(p.hops) for p in (two_hop, one_hop, own)] == [4, 3, 2]  # each: ..., D, a dummy hop
            assert own_info.cltv_expiry_delta == 18 and amount_at_introduction(own_info, 5) == 5
            # Delta: B's 40 + C's 50 + D's final 18; fees: B's and C's together (a dummy hop is free).
            assert info.cltv_expiry_delta == 40 + 50 + 18 and one_info.cltv_expiry_delta == 50 + 18
            amount = 1_000_000
            at_c = amount + C_POLICY.fee_msat(amount)
            assert amount_at_introduction(info, amount) >= at_c + B_POLICY.fee_msat(at_c)
            assert amount_at_introduction(info, amount) - (at_c + B_POLICY.fee_msat(at_c)) <= 2  # rounded up
            assert amount_at_introduction(one_info, amount) == at_c
            # The largest minimum (C's), the smallest maximum (the test graph has capacities only).
            assert (info.htlc_minimum_msat, info.htlc_maximum_msat) == (1_000, 2 * SAT * 1000)
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_an_offer_is_paid_through_b_and_c_and_the_payment_is_recorded_with_its_proof() -> None:
    async def scenario() -> None:
        net = await _line()
        a, b, _c, d = net.nodes
        try:
            offer = d.offers.create_offer("a coffee", 10_000, quantity_max=5)
            before = net.balance_msat(1), net.balance_msat(2)
            paid = await a.offers.pay_offer(offer, quantity=3, payer_note="three", timeout=20, fetch_timeout=10)
            invoice = paid.invoice
            assert invoice.amount_msat == 30_000 and sha256(paid.preimage) == invoice.payment_hash
            (path, info), _, _ = invoice.usable_paths
            assert path.first_node_id == b.node_id
            assert paid.fee_msat == amount_at_introduction(info, 30_000) - 30_000  # A - B is direct: no route fee
            record = a.store.payment(invoice.payment_hash)
            assert record is not None and record.status == "succeeded" and record.preimage == paid.preimage
            assert record.invoice == invoice.encode() and record.invoice.startswith("lni1")
            assert sent_json(record, Timestamps())["payee"] == d.node_id.hex()  # GET /v1/payments names D
            stored = d.store.invoice(invoice.payment_hash)
            assert stored is not None and stored.status == "paid"
            await until(lambda: (net.balance_msat(1), net.balance_msat(2)) != before)
            # B and C each kept their fee: the payment went A -> B -> C -> D, not around them.
            at_c = 30_000 + C_POLICY.fee_msat(30_000)
            await until(lambda: net.balance_msat(2) - before[1] == C_POLICY.fee_msat(30_000))
            b_kept = net.balance_msat(1) - before[0]
            assert b_kept >= B_POLICY.fee_msat(at_c)
            assert 0 <= paid.fee_msat - b_kept - C_POLICY.fee_msat(30_000) <= 2  # the rest: payinfo rounding
            # Paying the same invoice again is refused: one payment per payment hash.
            with pytest.raises(PaymentError):
                await a.pay_blinded(invoice.usable_paths, invoice.amount_msat, invoice.payment_hash, timeout=5)
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_an_invoice_for_another_amount_than_the_offers_is_refused() -> None:
    async def scenario() -> None:
        net = await _line()
        a, d = net.nodes[0], net.nodes[3]
        try:
            offer = d.offers.create_offer("exact price", 10_000)
            fetched = await a.offers.fetch_invoice(offer, timeout=10)
            check_invoice_amount(fetched.invoice, fetched.request)  # the offer's own price: fine
            dearer = dataclasses.replace(fetched.invoice, amount_msat=10_001, signature=None).sign(d.privkey)
            assert dearer.signature_valid()  # signed by the payee, and still not what the offer said
            with pytest.raises(DecodeError, match="invoice_amount: 10001 msat is not the offer's 10000 msat"):
                check_invoice_amount(dearer, fetched.request)
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_payer_that_is_the_payees_only_peer_pays_over_the_path_the_payee_introduces() -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, 2 * SAT, 0)])
        _announce(net)
        a, d = net.nodes
        try:
            offer = d.offers.create_offer("next door", 3_000)
            paid = await a.offers.pay_offer(offer, timeout=20, fetch_timeout=10)
            (via_a, _), (own, _) = paid.invoice.usable_paths  # A opens its own hop of the first (no fee to itself)
            assert (via_a.first_node_id, own.first_node_id) == (a.node_id, d.node_id)
            assert sha256(paid.preimage) == paid.invoice.payment_hash and paid.fee_msat == 0
        finally:
            await net.stop()

    asyncio.run(scenario())
