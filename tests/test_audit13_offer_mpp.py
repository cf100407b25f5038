"""MPP over a BOLT 12 invoice's own blinded paths (issue 13: "pays over the invoice's blinded
paths with MPP"), between real nodes over loopback TCP.

The offer's price is more than either channel into the payee can carry, so the invoice can only
be paid in parts, each over a different path of the invoice the payee signed.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from lightspeed.node.node import PaymentReceived
from lightspeed.node.offers_flow import pay_invoice
from lightspeed.offers import decode_bolt12
from lightspeed.offers.tlv_fields import MPP_COMPULSORY, features_to_bytes
from tests.support.network import create_network, next_event, no_htlcs, until
from tests.test_onionmsg_node import _announce

SAT = 1_000_000
PRICE_MSAT = 1_400_000_000  # more than the 1_000_000 sat of B-D or C-D alone


def test_an_offer_too_big_for_one_path_is_paid_in_parts_over_two_of_its_invoices_paths() -> None:
    """P - X - B|C - D: D's invoice paths are introduced by X (through B, through C); P is not
    on them, so it pays over both, one part each."""

    async def scenario() -> None:
        # 0 P, 1 X, 2 B, 3 C, 4 D
        net = await create_network(5, [(0, 1, 4 * SAT, 0), (1, 2, 2 * SAT, 0), (1, 3, 2 * SAT, 0),
                                       (2, 4, SAT, 0), (3, 4, SAT, 0)])
        _announce(net)
        p, x, b, c, d = net.nodes
        try:
            offer = d.offers.create_offer("too big for one channel", PRICE_MSAT)
            paid = await p.offers.pay_offer(offer, timeout=30, fetch_timeout=10)
            invoice = paid.invoice
            assert sha256(paid.preimage) == invoice.payment_hash
            firsts = [(path.first_node_id, path.hops[0].blinded_node_id) for path, _ in invoice.usable_paths]
            assert [f for f, _ in firsts][:2] == [x.node_id, x.node_id]  # two paths, introduced by X
            assert all(info.htlc_maximum_msat < PRICE_MSAT for _, info in invoice.usable_paths[:2])
            assert await next_event(d, PaymentReceived) == PaymentReceived(invoice.payment_hash, PRICE_MSAT)
            # One part crossed B, the other C: neither channel into D could take it all.
            assert b.sent_counts["update_add_htlc"] == 1 and c.sent_counts["update_add_htlc"] == 1
            record = p.store.payment(invoice.payment_hash)
            assert record is not None and record.status == "succeeded" and record.invoice == invoice.encode()
            await until(lambda: no_htlcs(net))
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_payer_next_to_both_introduction_peers_still_pays_a_big_offer_in_parts() -> None:
    """A - B|C - D (the payer is B's and C's other neighbour): the payee must not hand the payer
    only paths the payer introduces itself; the price still needs two parts."""

    async def scenario() -> None:
        net = await create_network(4, [(0, 1, 2 * SAT, 0), (0, 2, 2 * SAT, 0), (1, 3, SAT, 0), (2, 3, SAT, 0)])
        _announce(net)
        a, b, c, d = net.nodes
        try:
            offer = d.offers.create_offer("too big for one channel", PRICE_MSAT)
            paid = await a.offers.pay_offer(offer, timeout=30, fetch_timeout=10)
            invoice = paid.invoice
            assert sha256(paid.preimage) == invoice.payment_hash
            # D's two-hop paths start at A, the only other neighbour of B and C: A opens its own
            # hop and pays the rest, introduced by B and by C (before: one path left, stuck pending).
            assert [p.first_node_id for p, _ in invoice.usable_paths][:2] == [a.node_id, a.node_id]
            assert await next_event(d, PaymentReceived) == PaymentReceived(invoice.payment_hash, PRICE_MSAT)
            assert b.sent_counts["update_add_htlc"] == 1 and c.sent_counts["update_add_htlc"] == 1
            assert a.store.payment(invoice.payment_hash).status == "succeeded"  # type: ignore[union-attr]
            await until(lambda: no_htlcs(net))
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_an_invoice_with_mpp_compulsory_is_paid_in_two_parts_over_two_paths() -> None:
    """BOLT 12: if `invoice_features` contains the MPP/compulsory bit: MUST pay the invoice via
    multiple separate blinded paths (even an amount one path could carry)."""

    async def scenario() -> None:
        net = await create_network(5, [(0, 1, 4 * SAT, 0), (1, 2, 2 * SAT, 0), (1, 3, 2 * SAT, 0),
                                       (2, 4, SAT, 0), (3, 4, SAT, 0)])
        _announce(net)
        p, _x, b, c, d = net.nodes
        try:
            offer = d.offers.create_offer("two parts, always", 50_000)
            fetched = await p.offers.fetch_invoice(offer, timeout=10)
            invoice = dataclasses.replace(fetched.invoice, features=features_to_bytes([MPP_COMPULSORY]),
                                          signature=None).sign(d.privkey)
            assert decode_bolt12(invoice.encode()) == invoice  # a valid invoice D signed
            preimage = await pay_invoice(p, invoice, 20)
            assert sha256(preimage) == invoice.payment_hash
            assert await next_event(d, PaymentReceived) == PaymentReceived(invoice.payment_hash, 50_000)
            assert b.sent_counts["update_add_htlc"] == 1 and c.sent_counts["update_add_htlc"] == 1
            # One usable path cannot carry separate parts: refused before anything is sent.
            one = d.blinded_payment_paths(50_000, via=[[b.node_id]])
            with pytest.raises(PaymentError, match=r"separate blinded paths \(MPP/compulsory\), and 1 path"):
                await p.pay_blinded(one.paths, 50_000, one.payment_hash, timeout=5, separate_paths=True)
            assert p.store.payment(one.payment_hash) is None
            await until(lambda: no_htlcs(net))
        finally:
            await net.stop()

    asyncio.run(scenario())
