"""Issue 14, the payer's side: the LSP is chosen by itself, and a plain ``pay`` goes async when the
payee is our LSP's client.

A - L - B in process over loopback TCP (L an LSP with a real SQLite hold store; B's channel private,
reached through the route hint in its invoice), REST through the real app over ASGI. Registrations
are real ``lsp_register`` onion messages and are kept in the payer's store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from lightspeed.asyncpay.policy import HoldLimits
from lightspeed.invoice import verify_payment_proof
from lightspeed.node.node import AsyncPaymentSucceeded, HtlcHeld, PaymentReceived
from lightspeed.node.outcomes import NodeEvent
from lightspeed.store import SqliteStore
from tests.support.network import bring_online, create_network, next_event, take_offline, until
from tests.test_api import api, error
from tests.test_wire14_flow import announce, make_lsp, run

SAT = 1_000_000
A, L, B = 0, 1, 2
AMOUNT = 40_000_000
T = TypeVar("T")


async def first(events: AsyncIterator[NodeEvent], kind: type[T]) -> T:
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError("the subscription ended")


@pytest.mark.slow
def test_plain_pay_to_our_lsps_offline_client_goes_async_and_the_lsp_is_the_registered_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            net = await create_network(3, [(A, L, SAT, 0), (L, B, SAT, 0)], private=[(L, B)], datadir=tmp_path)
            announce(net)
            lsp = make_lsp(net.nodes[L], tmp_path / "lsp.sqlite", HoldLimits(), http)
            payer, lsp_id = net.nodes[A], net.nodes[L].node_id
            hinted = net.nodes[B].create_invoice(AMOUNT, "to a client of our LSP", route_hints=[net.hint(L, B)])
            async with api(payer) as client:
                # No LSP registered yet: an async payment names the missing field.
                refused = await client.post("/v1/payments/async", json={"invoice": hinted.encode()})
                assert refused.status_code == 409
                assert error(refused)["field"] == "lsp_id" and "none registered" in error(refused)["reason"]
                assert payer.asyncpay.automatic_lsp(hinted) is None  # nor is a plain pay made async

                await net.nodes[B].asyncpay.register_with(lsp_id, None)
                limits = await payer.asyncpay.register_with(lsp_id, None)
                assert limits["limits"]["max_hold_seconds"] == HoldLimits().max_hold_seconds
                assert payer.asyncpay.registered_lsps() == [lsp_id]
                reopened = SqliteStore(tmp_path / "node0" / "node.sqlite")  # kept on disk, not only in memory
                assert [r[0] for r in reopened.lsp_registrations()] == [lsp_id]
                reopened.close()
                await take_offline(net, B)

                unhinted = net.nodes[L].create_invoice(AMOUNT, "the LSP's own: a direct peer")
                assert payer.asyncpay.automatic_lsp(unhinted) is None

                events = payer.events()  # the API reads the default queue: a subscription of our own
                paid = await client.post("/v1/payments", json={"invoice": hinted.encode()})
                assert paid.status_code == 200, paid.text
                body = paid.json()
                assert body["status"] == "pending" and body["async_lsp_id"] == lsp_id.hex()
                assert body["payment_hash"] == hinted.payment_hash.hex() and body["amount_msat"] == AMOUNT
                held = await next_event(net.nodes[L], HtlcHeld)
                assert held == HtlcHeld(hinted.payment_hash, held.amount_msat, payer.node_id)
                stored = payer.store.async_payment(hinted.payment_hash)
                assert stored is not None and stored.lsp_id == lsp_id
                await until(lambda: len(lsp.store.mailbox_peek(net.nodes[B].node_id, int(time.time()))) == 1)  # the notice

                payee = await bring_online(net, B)
                assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(
                    hinted.payment_hash, AMOUNT)
                done = await asyncio.wait_for(first(events, AsyncPaymentSucceeded), 20)
                assert isinstance(done, AsyncPaymentSucceeded) and verify_payment_proof(hinted, done.preimage)

                # A second registration: which LSP holds our money is never guessed.
                with payer.store.transaction():
                    payer.store.put_lsp_registration(b"\x02" * 33, None, 1)
                other = net.nodes[B].create_invoice(AMOUNT, "again", route_hints=[net.hint(L, B)])
                assert payer.asyncpay.automatic_lsp(other) is None
                refused = await client.post("/v1/payments/async", json={"invoice": other.encode()})
                assert refused.status_code == 409 and error(refused)["field"] == "lsp_id"
                assert "registered with 2 LSPs" in error(refused)["reason"]
                named = await client.post("/v1/payments/async", json={"invoice": other.encode(),
                                                                       "lsp_id": lsp_id.hex()})
                assert named.status_code == 202 and named.json()["lsp_id"] == lsp_id.hex()
                again = await asyncio.wait_for(first(events, AsyncPaymentSucceeded), 20)  # B online: at once
                assert again.payment_hash == other.payment_hash
            await net.stop()

    run(scenario(), timeout=90)
