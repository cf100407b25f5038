"""Issue 14, the payer's side: ``AsyncPaymentSucceeded`` after the payer restarted.

A - LSP_a - LSP_b - B in process over loopback TCP, every node on its own SQLite file. A pays B
(offline) asynchronously and crashes while its HTLC is held; B comes back and is paid while A is
away; A restarts from its files, its channel settles, and the event comes with the proof exactly
once (not again on a second restart). Plus the store's upgrade from schema version 3.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from lightspeed.asyncpay.policy import HoldLimits
from lightspeed.invoice import verify_payment_proof
from lightspeed.node.node import AsyncPaymentSucceeded, HtlcHeld, Node, PaymentReceived
from lightspeed.store import AsyncPaymentRecord, SqliteStore
from lightspeed.store.sqlite import SCHEMA_VERSION
from tests.support.network import (
    bring_online,
    create_network,
    next_event,
    restart_from_disk,
    take_offline,
    until,
)
from tests.test_wire14_flow import AMOUNT, LINE, LSP_A, LSP_B, A, B, announce, make_lsp, run


def async_successes(node: Node) -> list[AsyncPaymentSucceeded]:
    """Every AsyncPaymentSucceeded the node emitted so far (drains its default event queue)."""
    seen = []
    while not node.events.empty():
        event = node.events.get_nowait()
        if isinstance(event, AsyncPaymentSucceeded):
            seen.append(event)
    return seen


@pytest.mark.slow
def test_payer_crashes_while_held_and_gets_async_payment_succeeded_once_after_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE, datadir=tmp_path)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            invoice = net.nodes[B].create_invoice(AMOUNT, "paid after the payer crashed")
            await take_offline(net, B)

            payment = await net.nodes[A].asyncpay.pay_async(invoice, net.nodes[LSP_A].node_id)
            record = net.nodes[A].store.async_payment(invoice.payment_hash)
            assert record is not None and record.lsp_id == net.nodes[LSP_A].node_id
            assert record.amount_msat == AMOUNT and record.succeeded_at is None
            await next_event(net.nodes[LSP_A], HtlcHeld)
            await until(lambda: len(lsp_b.store.mailbox_peek(net.nodes[B].node_id, int(time.time()))) == 1)
            payment.task.cancel()
            await take_offline(net, A)  # A goes away with its HTLC held

            payee = await bring_online(net, B)
            announce(net)
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(invoice.payment_hash,
                                                                                          AMOUNT)
            await until(lambda: lsp_a.book.held() == [])

            payer = await restart_from_disk(net, A)  # a new process: only what A's files hold
            event = await next_event(payer, AsyncPaymentSucceeded, timeout=20)
            assert isinstance(event, AsyncPaymentSucceeded) and event.payment_hash == invoice.payment_hash
            assert verify_payment_proof(invoice, event.preimage)
            status = payer.payment_status(invoice.payment_hash)
            assert status is not None and status.status == "succeeded" and status.preimage == event.preimage
            stored = payer.store.async_payment(invoice.payment_hash)
            assert stored is not None and stored.succeeded_at is not None
            await asyncio.sleep(1)
            assert async_successes(payer) == []  # once

            again = await restart_from_disk(net, A)
            await until(lambda: all(cid in again._reestablished for cid in again.channels))
            await asyncio.sleep(1)
            assert async_successes(again) == []  # not replayed by a later restart
            await net.stop()

    run(scenario(), timeout=90)


def test_a_version_3_store_gains_the_async_payment_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    store = SqliteStore(path)
    store._db.execute("DROP TABLE async_payments")
    store._db.execute("DROP TABLE lsp_registrations")
    store._db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    store.close()
    reopened = SqliteStore(path)
    assert reopened._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "4"
    assert SCHEMA_VERSION == 4
    with reopened.transaction():
        reopened.put_async_payment(AsyncPaymentRecord(b"h" * 32, b"\x02" * 33, 5000, 100))
        reopened.put_lsp_registration(b"\x03" * 33, None, 7)
        assert reopened.mark_async_payment_succeeded(b"h" * 32, 200)
        assert not reopened.mark_async_payment_succeeded(b"h" * 32, 300)  # exactly once
        assert not reopened.mark_async_payment_succeeded(b"x" * 32, 300)  # not an async payment
    assert reopened.async_payment(b"h" * 32) == AsyncPaymentRecord(b"h" * 32, b"\x02" * 33, 5000, 100, 200)
    assert reopened.lsp_registrations() == [(b"\x03" * 33, None, 7)]
    reopened.close()
