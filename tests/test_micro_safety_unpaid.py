"""Unpaid allowances are bounded: a cap per server, a time to live, a rate limit per client.

Anyone can ask for an allowance without paying (it costs the server an invoice and about
5 KB of store each), so: at most ``max_unpaid`` wait for their payment (503 beyond), each is
deleted once its invoice can no longer be paid, and one client (remote address, IPv6 by /64)
gets ``create_burst`` at once then one per ``create_interval_seconds`` (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.errors import UsageError
from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.hashchain import anchor, lane_tip
from lightspeed.micro.ratelimit import RateLimiter, client_key
from lightspeed.micro.server import AllowanceServer, CallRefused, ServerPolicy
from lightspeed.micro.store import Status
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest, Token
from tests.support.ledger import Ledger
from tests.test_micro_server import Client, bought

START = 1_800_000_000.0


def make_server(clock: list[float], store: object = None, **policy: object) -> AllowanceServer:
    ledger = Ledger()
    return AllowanceServer(store or MemoryAllowanceStore(), ledger, ledger.node_id,  # type: ignore[arg-type]
                           ServerPolicy(Price(2), **policy),  # type: ignore[arg-type]
                           payer=ledger, clock=lambda: clock[0])


def request(per_lane: int = 10) -> AllowanceRequest:
    return AllowanceRequest(per_lane, (anchor(lane_tip(os.urandom(32), 0), per_lane),))


def body(per_lane: int = 10) -> dict[str, object]:
    return request(per_lane).to_json()


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def app_for(server: AllowanceServer) -> LightspeedMiddleware:
    return LightspeedMiddleware(Starlette(routes=[Route("/api/x", ok)]), server, {"/api": 1})


def http(app: LightspeedMiddleware, address: str = "198.51.100.7") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=(address, 40_000)),
                             base_url="http://api.test")


def refused(code: str) -> pytest.RaisesContext[CallRefused]:
    return pytest.raises(CallRefused, match=f"^{code}:")


# ------------------------------------------------------------------------------ the cap


def test_at_most_max_unpaid_allowances_wait_for_their_payment() -> None:
    async def go() -> None:
        clock = [START]
        server = make_server(clock, max_unpaid=3, creates_per_minute=100)
        async with http(app_for(server)) as client:
            made = [await client.post("/lightspeed/allowances", json=body()) for _ in range(3)]
            assert [r.status_code for r in made] == [201, 201, 201]
            full = await client.post("/lightspeed/allowances", json=body())
            assert full.status_code == 503 and full.headers["retry-after"] == "60"
            assert full.json()["error"]["code"] == "busy"
            header = await client.get("/api/x", headers={
                "Lightspeed-Allowance": request().header_value()})  # the same cap on the header path
            assert header.status_code == 503 and header.json()["error"]["code"] == "busy"
            # One is paid: once the server sees it, it no longer counts.
            first = made[0].json()["allowance"]
            assert isinstance(server.payee, Ledger)
            server.payee.pay_sync(first["invoice"])
            assert (await client.get(f"/lightspeed/allowances/{first['id']}")).json()["status"] == "active"
            assert (await client.post("/lightspeed/allowances", json=body())).status_code == 201
            assert (await client.post("/lightspeed/allowances", json=body())).status_code == 503
        assert await server.store.unpaid_count() == 3

    asyncio.run(go())


def test_a_full_server_first_forgets_the_unpaid_ones_whose_time_is_up() -> None:
    async def go() -> None:
        clock = [START]
        server = make_server(clock, max_unpaid=2)
        stale = [await server.create(request()) for _ in range(2)]
        with refused("busy"):
            await server.create(request())
        clock[0] += server.policy.unpaid_ttl + 1
        fresh = await server.create(request())
        for terms in stale:
            with refused("unknown_allowance"):
                await server.status(terms.allowance_id)
        assert (await server.status(fresh.allowance_id))["status"] == "pending"

    asyncio.run(go())


# ------------------------------------------------------------------------- the TTL


def test_unpaid_allowances_are_deleted_after_their_ttl_and_paid_ones_are_kept(tmp_path: Path) -> None:
    async def go() -> None:
        clock = [START]
        store = SqliteAllowanceStore(tmp_path / "allowances.db")
        server = make_server(clock, store=store)
        assert server.policy.unpaid_ttl == 600 + 600  # invoice expiry + grace
        tip = lane_tip(os.urandom(32), 0)
        unpaid = await server.create(AllowanceRequest(10, (anchor(tip, 10),)))
        paid = await server.create(request())
        assert isinstance(server.payee, Ledger)
        server.payee.pay_sync(paid.invoice)  # paid, but the server has not looked yet
        token = Token(unpaid.allowance_id, 0, 1, anchor(tip, 9))  # link 1 of a 10-link lane
        with refused("unpaid"):
            await server.spend(token)  # cached now

        clock[0] = START + server.policy.unpaid_ttl  # the boundary: not yet
        assert await server.forget_unpaid() == 0
        clock[0] += 1
        assert await server.forget_unpaid() == 1
        with refused("unknown_allowance"):
            await server.spend(token)  # gone from the cache too
        assert await store.load(unpaid.allowance_id) is None
        kept = await store.load(paid.allowance_id)
        assert kept is not None and kept.state.status is Status.ACTIVE  # activated, not deleted
        assert await store.unpaid_count() == 0
        await store.aclose()

    asyncio.run(go())


def test_an_expired_never_paid_allowance_is_deleted_not_closed_forever() -> None:
    async def go() -> None:
        clock = [START]
        server = make_server(clock, ttl_seconds=60)
        terms = await server.create(request())
        clock[0] += 61  # expired, but its invoice (600 s) may still be paid: kept
        assert await server.expire_due() == 0
        assert (await server.store.load(terms.allowance_id)) is not None
        clock[0] = START + server.policy.unpaid_ttl + 1
        assert await server.expire_due() == 0
        assert await server.store.load(terms.allowance_id) is None

    asyncio.run(go())


def test_the_unpaid_grace_cannot_be_shorter_than_a_minute() -> None:
    assert ServerPolicy(Price(1), invoice_expiry=100, unpaid_grace=60).unpaid_ttl == 160
    with pytest.raises(UsageError, match="unpaid_grace"):
        ServerPolicy(Price(1), unpaid_grace=59)
    for policy in ({"max_unpaid": 0}, {"creates_per_minute": 0}):
        with pytest.raises(UsageError, match="at least 1"):
            ServerPolicy(Price(1), **policy)  # type: ignore[arg-type]


# ------------------------------------------------------------------- the rate limit


def test_one_client_gets_a_burst_then_429_with_retry_after_and_others_are_not_affected() -> None:
    async def go() -> None:
        clock = [START]
        server = make_server(clock, creates_per_minute=3)  # a burst of 3, then one every 20 s
        app = app_for(server)
        async with http(app, "198.51.100.7") as mallory, http(app, "203.0.113.9") as alice:
            answers = [await mallory.post("/lightspeed/allowances", json=body()) for _ in range(3)]
            assert [a.status_code for a in answers] == [201, 201, 201]
            limited = await mallory.post("/lightspeed/allowances", json=body())
            assert limited.status_code == 429 and limited.headers["retry-after"] == "20"
            error = limited.json()["error"]
            assert error["code"] == "rate_limited" and error["retry_after"] == 20
            via_header = await mallory.get("/api/x", headers={"Lightspeed-Allowance": request().header_value()})
            assert via_header.status_code == 429 and via_header.headers["retry-after"] == "20"
            assert (await alice.post("/lightspeed/allowances", json=body())).status_code == 201
            clock[0] += 19.5  # half a second short of the next one
            short = await mallory.post("/lightspeed/allowances", json=body())
            assert short.status_code == 429 and short.headers["retry-after"] == "1"
            clock[0] += 0.5
            assert (await mallory.post("/lightspeed/allowances", json=body())).status_code == 201
            assert (await mallory.post("/lightspeed/allowances", json=body())).status_code == 429
            # Calls with a token are never rate-limited (they are paid for).
            free = await mallory.get("/api/x", headers={"Lightspeed-Token": Token(
                os.urandom(16), 0, 1, os.urandom(32)).header_value()})
            assert free.status_code == 402 and free.json()["error"]["code"] == "unknown_allowance"
        assert await server.store.unpaid_count() == 5

    asyncio.run(go())


def test_ipv6_clients_are_limited_by_their_64_prefix() -> None:
    async def go() -> None:
        clock = [START]
        server = make_server(clock, creates_per_minute=2)
        app = app_for(server)
        async with http(app, "2001:db8:1:2::1") as one, http(app, "2001:db8:1:2:ffff::9") as same_64, \
                http(app, "2001:db8:1:3::1") as other_64:
            assert (await one.post("/lightspeed/allowances", json=body())).status_code == 201
            assert (await same_64.post("/lightspeed/allowances", json=body())).status_code == 201
            assert (await same_64.post("/lightspeed/allowances", json=body())).status_code == 429
            assert (await other_64.post("/lightspeed/allowances", json=body())).status_code == 201

    asyncio.run(go())


def test_client_keys() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1") == "192.0.2.1"
    assert client_key(None) == client_key("") == "unknown"
    assert client_key("/run/api.sock") == "/run/api.sock"


def test_the_rate_limiter_keeps_at_most_max_clients_buckets() -> None:
    limiter = RateLimiter(per_minute=1, max_clients=3)
    for n in range(5):
        assert limiter.take(f"client {n}", START) == 0
    assert limiter.take("client 4", START) == 60  # still remembered: empty bucket
    assert len(limiter._buckets) == 3
    assert limiter.take("client 0", START) == 0  # forgotten (the least recently seen): full again
    assert limiter.take("client 0", START + 30) == 30
    with pytest.raises(UsageError):
        RateLimiter(per_minute=0)


def test_a_burst_of_concurrent_creates_from_one_client_stops_at_the_burst() -> None:
    async def go() -> None:
        server = make_server([time.time()], creates_per_minute=5)
        app = app_for(server)
        async with http(app) as client:
            answers = await asyncio.gather(*(client.post("/lightspeed/allowances", json=body())
                                             for _ in range(12)))
        assert sorted(a.status_code for a in answers) == [201] * 5 + [429] * 7

    asyncio.run(go())


# ------------------------------------------------------ the same limits, as first written on main

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
