"""Refunds with real nodes: a client holding the refund payment cannot get it paid twice.

The attack (issue 11, item 2): the server's refund payment is still pending at its timeout
because the client's node holds it (a hold invoice); the client asks again with a second
invoice; a server that took the timeout for a failure pays that one too, and the client
releases both. The refund must stay in flight, answer with the invoice being paid, and end
paid (or definitively failed) by what the server's node says, also after a restart.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.crypto.hashes import sha256
from lightspeed.invoice.decode import decode
from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.lightning import NodePayee, NodePayer
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import Token
from lightspeed.node.node import HtlcHeld, Node, PaymentReceived
from tests.support.network import Network, create_network, restart_from_disk, until

SAT = 1_000_000
PRICE = Price(10_000)  # msat per call
CALLS = 2_000  # 20,000,000 msat
SPENT = 1_000  # leaves a 10,000,000 msat refund
REFUND = 10_000_000


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@dataclass
class Api:
    server: AllowanceServer
    http: httpx.AsyncClient


@asynccontextmanager
async def paid_api(node: Node, db: Path, pay_timeout: float = 1.0) -> AsyncIterator[Api]:
    """The server's allowance layer over its node, on a SQLite store, behind the middleware."""
    store = SqliteAllowanceStore(db)
    server = AllowanceServer(store, NodePayee(node), node.node_id, ServerPolicy(PRICE),
                             payer=NodePayer(node, timeout=pay_timeout))
    app = LightspeedMiddleware(Starlette(routes=[Route("/api/x", ok)]), server, {"/api": 1})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as http:
        yield Api(server, http)
    await store.aclose()


class Buyer:
    """The client's side of one allowance of one lane: buy, spend, authenticate close/refund."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.tip = lane_tip(os.urandom(32), 0)
        self.walker = ChainWalker.from_tip(self.tip, CALLS)
        self.allowance_id = b""
        self.next_index = 1

    async def buy(self, http: httpx.AsyncClient) -> None:
        answer = await http.post("/lightspeed/allowances", json={
            "calls_per_lane": CALLS, "anchors": [anchor(self.tip, CALLS).hex()]})
        assert answer.status_code == 201, answer.text
        terms = answer.json()["allowance"]
        self.allowance_id = bytes.fromhex(terms["id"])
        await asyncio.wait_for(self.node.pay(decode(terms["invoice"]), timeout=10), 15)

    def token(self, index: int | None = None) -> str:
        index = self.next_index if index is None else index
        self.next_index = index + 1
        return Token(self.allowance_id, 0, index, self.walker.link(index)).header_value()

    @property
    def url(self) -> str:
        return f"/lightspeed/allowances/{self.allowance_id.hex()}"

    async def spend_and_close(self, http: httpx.AsyncClient) -> None:
        served = await http.get("/api/x", headers={"Lightspeed-Token": self.token(SPENT)})
        assert served.status_code == 200, served.text
        closed = await http.post(f"{self.url}/close", json={"token": self.token()})
        assert closed.status_code == 200 and closed.json()["refund_msat"] == REFUND, closed.text

    async def ask_refund(self, http: httpx.AsyncClient, invoice: str) -> httpx.Response:
        return await http.post(f"{self.url}/refund", json={"token": self.token(), "invoice": invoice})


class HeldLog:
    """Every payment the client's node holds (hold invoices) or receives, in order."""

    def __init__(self, node: Node) -> None:
        self.held: list[HtlcHeld] = []
        self.received: list[PaymentReceived] = []
        self._task = asyncio.create_task(self._run(node))

    async def _run(self, node: Node) -> None:
        async for event in node.events():
            if isinstance(event, HtlcHeld):
                self.held.append(event)
            elif isinstance(event, PaymentReceived):
                self.received.append(event)

    def stop(self) -> None:
        self._task.cancel()


def succeeded(node: Node, payment_hash: bytes) -> bool:
    """The node (the server's, paying the refund) has the preimage of this payment."""
    record = node.payment_status(payment_hash)
    return record is not None and record.status == "succeeded"


async def closed_allowance(net: Network, db: Path) -> tuple[Buyer, HeldLog]:
    client, server_node = net.nodes[0], net.nodes[1]
    buyer = Buyer(client)
    async with paid_api(server_node, db) as api:
        await buyer.buy(api.http)
        await until(lambda: len(server_node.settled_invoices) == 1)
        await buyer.spend_and_close(api.http)
    return buyer, HeldLog(client)


@pytest.mark.slow
def test_a_refund_held_past_the_timeout_is_not_paid_again_to_a_second_invoice(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, SAT, 0)])
        client = net.nodes[0]
        buyer, log = await closed_allowance(net, tmp_path / "allowances.db")
        async with paid_api(net.nodes[1], tmp_path / "allowances.db") as api:
            first_secret, second_secret = os.urandom(32), os.urandom(32)
            first = client.create_hold_invoice(sha256(first_secret), REFUND, "refund")
            second = client.create_hold_invoice(sha256(second_secret), REFUND, "refund again")

            answer = await buyer.ask_refund(api.http, first.encode())  # held past the 1 s timeout
            await until(lambda: len(log.held) == 1)
            again = await buyer.ask_refund(api.http, second.encode())
            await asyncio.sleep(0.5)  # room for a second payment to arrive, if one was sent
            held = {event.payment_hash: event.amount_msat for event in log.held}
            assert sum(held.values()) == REFUND, f"the client holds {sum(held.values())} msat in " \
                f"{len(held)} payments for a {REFUND} msat refund"
            assert second.payment_hash not in held

            # The answers say the refund is in flight, to the first invoice, both times.
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"status": "in_flight", "invoice": first.encode(), "amount_msat": REFUND}
            assert again.status_code == 202 and again.json()["invoice"] == first.encode()
            status = (await api.http.get(buyer.url)).json()
            assert status["refund"] == "in_flight" and status["refund_invoice"] == first.encode()

            # The client releases the payment it holds: the refund ends paid, with its proof.
            await client.settle_hold(first_secret)
            await until(lambda: succeeded(net.nodes[1], first.payment_hash))
            done = await buyer.ask_refund(api.http, second.encode())
            assert done.status_code == 200, done.text
            assert done.json() == {"status": "paid", "invoice": first.encode(), "amount_msat": REFUND,
                                   "preimage": first_secret.hex()}
            with pytest.raises(Exception, match="no held payment"):
                await client.settle_hold(second_secret)
        log.stop()
        await net.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_after_a_server_restart_an_in_flight_refund_is_resolved_by_asking_its_node(
        tmp_path: Path) -> None:
    """The server node restarts while the client holds the refund: the allowance server (cold
    cache, same store) asks the node, keeps the refund in flight, and records how it ended."""

    async def scenario() -> None:
        net = await create_network(2, [(0, 1, SAT, 0)], datadir=tmp_path / "nodes")
        client = net.nodes[0]
        db = tmp_path / "allowances.db"
        buyer, log = await closed_allowance(net, db)
        secret = os.urandom(32)
        held_invoice = client.create_hold_invoice(sha256(secret), REFUND, "refund")
        async with paid_api(net.nodes[1], db) as api:
            answer = await buyer.ask_refund(api.http, held_invoice.encode())
            assert answer.status_code == 202, answer.text
            await until(lambda: len(log.held) == 1)

        server_node = await restart_from_disk(net, 1)
        async with paid_api(server_node, db) as api:
            await until(lambda: client.channel_is_ready(net.channel(0, 1)))
            other = client.create_invoice(REFUND, "a second refund invoice")
            pending = await buyer.ask_refund(api.http, other.encode())
            assert pending.status_code == 202 and pending.json()["invoice"] == held_invoice.encode()
            assert await api.server.resolve_refunds() == 0  # still held: nothing ended

            await client.settle_hold(secret)
            await until(lambda: held_invoice.payment_hash in client.settled_invoices)
            await until(lambda: succeeded(server_node, held_invoice.payment_hash))
            assert await api.server.resolve_refunds() == 1
            status = (await api.http.get(buyer.url)).json()
            assert status["refund"] == "paid" and status["refund_preimage"] == secret.hex()
        assert other.payment_hash not in client.settled_invoices
        log.stop()
        await net.stop()

    asyncio.run(scenario())
