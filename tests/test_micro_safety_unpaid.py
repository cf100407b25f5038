"""Unpaid allowances are capped, forgotten after their invoice expires, and rate-limited per client (issue 11, item 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.ratelimit import RateLimiter
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import Price
from tests.support.ledger import Ledger
from tests.test_micro_server import Client, bought, refused


def _server(tmp_path: Path, now: list[float], **policy: int) -> tuple[AllowanceServer, Ledger]:
    ledger = Ledger()
    store = SqliteAllowanceStore(tmp_path / "allowances.db")
    return AllowanceServer(store, ledger, ledger.node_id, ServerPolicy(Price(1), **policy), payer=ledger,
                           clock=lambda: now[0]), ledger


def test_at_most_max_unpaid_allowances_wait_for_payment(tmp_path: Path) -> None:
    async def go() -> None:
        now = [1_000_000.0]
        server, _ = _server(tmp_path, now, max_unpaid=3)
        clients = [await bought(server, Client(), pay=False) for _ in range(3)]
        with refused("busy"):
            await bought(server, Client(), pay=False)  # the fourth unpaid one
        assert server.payee.pay_sync(clients[0].terms.invoice)  # type: ignore[attr-defined, union-attr]
        await server.status(clients[0].terms.allowance_id)  # type: ignore[union-attr]  # activated: no longer unpaid
        await bought(server, Client(), pay=False)  # so there is room for one more
        with refused("busy"):
            await bought(server, Client(), pay=False)

    asyncio.run(go())


def test_unpaid_allowances_are_forgotten_after_expiry_and_grace_but_a_late_payment_keeps_its_own(
        tmp_path: Path) -> None:
    async def go() -> None:
        now = [1_000_000.0]
        server, ledger = _server(tmp_path, now, invoice_expiry=600, unpaid_grace=600)
        never, late = await bought(server, Client(), pay=False), await bought(server, Client(), pay=False)
        now[0] += 1_199
        assert await server.forget_unpaid() == 0  # not yet past expiry + grace
        ledger.pay_sync(late.terms.invoice)  # type: ignore[union-attr]  # paid, but nobody asked since
        now[0] += 2
        assert await server.forget_unpaid() == 1
        assert await server.store.load(never.terms.allowance_id) is None  # type: ignore[union-attr]
        status = await server.status(late.terms.allowance_id)  # type: ignore[union-attr]
        assert status["status"] == "active" and status["paid_calls"] == 100
        assert await server.forget_unpaid() == 0

    asyncio.run(go())


def test_the_rate_limiter_refills_at_its_rate() -> None:
    limiter = RateLimiter(per_minute=6, max_clients=2)
    assert [limiter.take("a", 0.0) for _ in range(6)] == [0.0] * 6
    assert limiter.take("a", 0.0) == 10.0  # one token every 10 s
    assert limiter.take("a", 10.0) == 0.0
    assert limiter.take("b", 10.0) == 0.0 and limiter.take("c", 10.0) == 0.0  # "a" dropped: memory bounded
    assert limiter.take("a", 10.0) == 0.0


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def test_a_client_asking_for_too_many_allowances_gets_429_with_retry_after(tmp_path: Path) -> None:
    async def go() -> None:
        server, _ = _server(tmp_path, [1_000_000.0], creates_per_minute=5)
        app = LightspeedMiddleware(Starlette(routes=[Route("/api/x", ok)]), server, {"/api": 1})
        body = Client().request.to_json()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app, client=("10.0.0.1", 1)),
                                     base_url="http://api") as one, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app, client=("10.0.0.2", 1)),
                                  base_url="http://api") as other:
            statuses = [(await one.post("/lightspeed/allowances", json=body)).status_code for _ in range(6)]
            assert statuses == [201] * 5 + [429]
            refused_ = await one.post("/lightspeed/allowances", json=body)
            assert refused_.json()["error"]["code"] == "rate_limited" and int(refused_.headers["retry-after"]) >= 1
            assert (await other.post("/lightspeed/allowances", json=body)).status_code == 201  # per address

    asyncio.run(go())
