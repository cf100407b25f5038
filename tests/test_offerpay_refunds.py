"""BOLT 12 refunds between real nodes (loopback TCP, SQLite stores): issue 13.

A (who owes money) creates a refund whose ``invreq_paths`` leads back to A through B; D (who is
owed) answers it with an invoice over its own blinded payment paths, sent along that path, and
A pays it. A pays a refund once: a second invoice for it is refused, across restarts of A (the
refund's state is in A's store), and so is an expired refund or one for another chain.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, PaymentError, UsageError
from lightspeed.node.queries import is_active
from lightspeed.offers import build_refund, decode_invoice_request
from lightspeed.store import SqliteStore
from tests.support.network import Network, create_network, restart_from_disk, until
from tests.test_onionmsg_node import _announce

SAT = 1_000_000


async def _line(datadir: Path | None = None) -> Network:
    net = await create_network(4, [(0, 1, 2 * SAT, 0), (1, 2, 2 * SAT, 0), (2, 3, 2 * SAT, 0)], datadir=datadir)
    _announce(net)
    return net


def _sent(net: Network) -> list[int]:
    return [p.amount_msat for p in net.nodes[0].store.payments() if p.status == "succeeded"]


def test_a_refund_is_paid_once_across_restarts_of_its_payer(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        try:
            refund = net.nodes[0].refunds.create(25_000, "a returned mug")
            text = refund.encode()
            assert text.startswith("lnr1") and refund.is_refund and refund.signature is None
            (path,) = refund.paths or ()
            assert path.first_node_id == net.nodes[1].node_id  # the reply path starts at A's peer B
            a = await restart_from_disk(net, 0)  # A forgets everything but its store
            await until(lambda: all(is_active(a, cid) for cid in a.channels), 20)
            d = net.nodes[3]
            answered = await d.refunds.pay(text, timeout=20)
            assert answered.paid and answered.invoice.amount_msat == 25_000
            assert answered.invoice.request == decode_invoice_request(text).without_signatures()
            await until(lambda: a.refunds.status(a.store.refunds()[0]).status == "paid")
            record = a.store.refunds()[0]
            assert record.payment_hash == answered.invoice.payment_hash
            assert record.invoice == answered.invoice.encode()
            payment = a.store.payment(answered.invoice.payment_hash)
            assert payment is not None and payment.preimage is not None
            assert sha256(payment.preimage) == answered.invoice.payment_hash
            # A second invoice for the same refund (a new payment hash), after another restart of A:
            a = await restart_from_disk(net, 0)
            await until(lambda: all(is_active(a, cid) for cid in a.channels), 20)
            with pytest.raises(PaymentError, match="refused our invoice: refund: already paid"):
                await d.refunds.pay(text, timeout=20)
            assert _sent(net) == [25_000]  # paid exactly once
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_second_invoice_while_the_first_is_being_paid_is_refused_and_a_resend_is_not_paid_again() -> None:
    async def scenario() -> None:
        net = await _line()
        a, d = net.nodes[0], net.nodes[3]
        try:
            refund = a.refunds.create(5_000, "twice?")
            record = a.store.refunds()[0]
            first = d.offers.invoice_for(refund, 5_000, int(time.time()))
            second = d.offers.invoice_for(refund, 5_000, int(time.time()))
            assert a.refunds.accept(record, first.to_tlv()) == first  # committed as "paying"
            assert a.store.refunds()[0].status == "paying"
            assert a.refunds.accept(a.store.refunds()[0], first.to_tlv()) is None  # a resend: nothing to pay
            with pytest.raises(UsageError, match="refund: already paying"):
                a.refunds.accept(a.store.refunds()[0], second.to_tlv())
            wrong = d.offers.invoice_for(a.refunds.create(6_000, "other"), 6_000, int(time.time()))
            with pytest.raises(DecodeError, match="invoice_request"):  # an invoice for another refund
                a.refunds.accept(a.store.refunds()[0], wrong.to_tlv())
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_expired_wrong_chain_and_offer_requests_are_not_answered_as_refunds() -> None:
    async def scenario() -> None:
        net = await _line()
        a, d = net.nodes[0], net.nodes[3]
        try:
            path, _ = a.onion_messages.blinded_path_to_us()
            late = build_refund(payer_id=a.node_id, metadata=b"m", description="late", amount_msat=1_000,
                                chain=net.nodes[0].network.chain_hash, absolute_expiry=int(time.time()) - 1,
                                paths=[path])
            with pytest.raises(DecodeError, match="offer_absolute_expiry: the refund expired"):
                await d.refunds.pay(late.encode())
            mainnet = build_refund(payer_id=a.node_id, metadata=b"m", description="mainnet", amount_msat=1_000,
                                   chain=BITCOIN.chain_hash, paths=[path])
            with pytest.raises(DecodeError, match="invreq_chain"):
                await d.refunds.pay(mainnet.encode())
            with pytest.raises(UsageError, match="absolute_expiry"):
                a.refunds.create(1_000, "already over", absolute_expiry=int(time.time()))
            assert d.store.invoices() == [] and d.onion_messages.counts["sent"] == 0  # nothing made, nothing sent
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_the_refunds_table_survives_reopening_the_store(tmp_path: Path) -> None:
    from lightspeed.store import RefundRecord

    store = SqliteStore(tmp_path / "s.sqlite")
    record = RefundRecord(b"\x02" * 33, "lnr1x", b"p" * 32, 7, None)
    with store.transaction():
        store.put_refund(record)
    store.close()
    again = SqliteStore(tmp_path / "s.sqlite")
    assert again.refund(b"\x02" * 33) == record and again.refund_by_path_id(b"p" * 32) == record
    assert again.refunds() == [record] and again.refund(b"\x03" * 33) is None
