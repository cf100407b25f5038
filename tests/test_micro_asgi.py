"""The ASGI middleware and the httpx client together, over a real Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.client import ClientPolicy, LightspeedAuth
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest
from tests.support.ledger import Ledger, SyncPayer
from tests.test_micro_hashchain import naive_links

THIRD = Price(1, 3)


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path})


def paid_app(price: Price = THIRD) -> tuple[LightspeedMiddleware, AllowanceServer, Ledger, list[str]]:
    ledger = Ledger()
    server = AllowanceServer(MemoryAllowanceStore(), ledger, ledger.node_id, ServerPolicy(price),
                             payer=ledger)
    served: list[str] = []

    async def counted(request: Request) -> JSONResponse:
        served.append(request.url.path)
        return JSONResponse({"path": request.url.path})

    routes = [Route("/api/{name}", counted), Route("/premium/{name}", counted), Route("/free", echo)]
    app = LightspeedMiddleware(Starlette(routes=routes), server, {"/api": 1, "/premium": 5})
    return app, server, ledger, served


def client(app: LightspeedMiddleware, auth: LightspeedAuth | None, log: list[int] | None = None) -> httpx.AsyncClient:
    async def record(response: httpx.Response) -> None:
        if log is not None:
            log.append(response.status_code)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test", auth=auth,
                             event_hooks={"response": [record]})


def test_unpriced_routes_pass_and_priced_ones_answer_402_with_an_offer() -> None:
    async def go() -> None:
        app, server, _, served = paid_app()
        async with client(app, None) as http:
            assert (await http.get("/free")).json() == {"path": "/free"}
            response = await http.get("/premium/report")
            assert response.status_code == 402 and served == []
            assert response.headers["www-authenticate"].startswith("Lightspeed")
            body = response.json()
            assert body["error"]["code"] == "no_token"
            offer = body["lightspeed"]
            assert offer["node_id"] == server.node_id.hex() and offer["cost"] == 5
            assert offer["price"] == {"msat": 1, "calls": 3} and offer["granularity"] == 3
            bad = await http.get("/api/x", headers={"Lightspeed-Token": "nonsense"})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "token"
            assert (await http.get("/lightspeed/offer")).json()["lightspeed"]["cost"] == 1
            assert (await http.get("/lightspeed/nothing")).status_code == 404

    asyncio.run(go())


def test_the_rest_endpoints_sell_report_close_and_refund() -> None:
    async def go() -> None:
        app, _, ledger, _ = paid_app(Price(5))
        links = naive_links(b"\x07" * 32, 12)
        request = AllowanceRequest(12, (links[0],))
        async with client(app, None) as http:
            created = await http.post("/lightspeed/allowances", json=request.to_json())
            assert created.status_code == 201
            allowance = created.json()["allowance"]
            ledger.pay_sync(allowance["invoice"])
            token = f"{allowance['id']}.0.1.{links[1].hex()}"
            assert (await http.get("/api/a", headers={"Lightspeed-Token": token})).status_code == 200
            status = (await http.get(f"/lightspeed/allowances/{allowance['id']}")).json()
            assert status["status"] == "active" and status["spent"] == 1 and status["remaining_calls"] == 11
            close = await http.post(f"/lightspeed/allowances/{allowance['id']}/close",
                                    json={"token": f"{allowance['id']}.0.2.{links[2].hex()}"})
            assert close.json() == {"refund_msat": 55}
            invoice = (await ledger.create_client_invoice(55, "refund", 600)).encode()
            refund = await http.post(f"/lightspeed/allowances/{allowance['id']}/refund",
                                     json={"token": f"{allowance['id']}.0.2.{links[2].hex()}", "invoice": invoice})
            assert refund.json()["status"] == "paid" and ledger.payments[-1] == 55
            bad = await http.post("/lightspeed/allowances", json={"calls_per_lane": 0, "anchors": []})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "allowance.calls_per_lane"

    asyncio.run(go())


def test_async_client_pays_as_it_calls_in_parallel_over_lanes() -> None:
    async def go() -> None:
        app, server, ledger, served = paid_app()
        statuses: list[int] = []
        auth = LightspeedAuth(ledger, ClientPolicy(calls_per_lane=60, lanes=4))
        async with client(app, auth, statuses) as http:
            for _ in range(5):
                answers = await asyncio.gather(*(http.get(f"/api/{n}") for n in range(40)))
                assert all(a.status_code == 200 for a in answers)
            premium = await http.get("/premium/report")
            assert premium.status_code == 200
        assert len(served) == 201
        # Bought ahead of running out: 240 calls per allowance, one 402 to learn the offer.
        assert statuses.count(402) <= len(ledger.payments) + 2
        spent = 0
        for allowance in auth.allowances["http://api.test"]:
            status = await server.status(allowance.allowance_id)
            spent += int(str(status["spent"]))
        # 200 calls at 1 link and one at 5; learning that /premium costs 5 revealed one link
        # that the retry skipped, and allowances retired as exhausted are fully spent.
        retired = sum(ledger.payments) * 3 - sum(a.calls_per_lane * 4 for a in auth.allowances["http://api.test"])
        assert spent + retired in (205, 206)
        assert sum(ledger.payments) == auth.spent_msat

    asyncio.run(go())


def test_sync_client_with_a_synchronous_payer_over_real_http() -> None:
    app, _, ledger, served = paid_app(Price(2))
    auth = LightspeedAuth(SyncPayer(ledger), ClientPolicy(calls_per_lane=50, lanes=1))
    with serving(app) as base_url, httpx.Client(base_url=base_url, auth=auth) as http:
        for n in range(120):
            assert http.get(f"/api/{n}").status_code == 200
    assert len(served) == 120
    assert ledger.payments == [100, 100, 100]  # three allowances of 50 calls at 2 msat


@contextlib.contextmanager
def serving(app: LightspeedMiddleware) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else delayed ACKs cost 40 ms a call
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_batched_allowance_pays_ahead_without_stalling() -> None:
    async def go() -> None:
        app, _, ledger, served = paid_app(Price(1))
        statuses: list[int] = []
        auth = LightspeedAuth(ledger, ClientPolicy(calls_per_lane=100, lanes=1, batch_calls=10))
        async with client(app, auth, statuses) as http:
            for n in range(95):
                assert (await http.get(f"/api/{n}")).status_code == 200
        assert len(served) == 95
        assert ledger.payments == [10] * 10  # batch by batch, never more than two ahead
        assert statuses.count(402) == 2  # the offer, then the allowance's invoice; no stall later

    asyncio.run(go())


def test_a_restarted_client_goes_on_with_its_saved_allowance(tmp_path: Path) -> None:
    async def go() -> None:
        app, _, ledger, served = paid_app(Price(1))
        state = tmp_path / "allowances.json"
        first = LightspeedAuth(ledger, ClientPolicy(calls_per_lane=100, lanes=2, low_water=0))
        async with client(app, first) as http:
            for n in range(30):
                assert (await http.get(f"/api/{n}")).status_code == 200
            first.save(state)
            for n in range(10):  # spent after the save: the saved positions are stale
                assert (await http.get(f"/api/late{n}")).status_code == 200
        assert state.stat().st_mode & 0o777 == 0o600
        second = LightspeedAuth(ledger, ClientPolicy(calls_per_lane=100, lanes=2, low_water=0))
        second.load(state)
        statuses: list[int] = []
        async with client(app, second, statuses) as http:
            for n in range(50):
                assert (await http.get(f"/api/after{n}")).status_code == 200
        assert ledger.payments == [200]  # no second allowance was bought
        assert len(served) == 90 and statuses.count(401) <= 2  # one resync per stale lane

    asyncio.run(go())
