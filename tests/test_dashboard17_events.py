"""The dashboard's server side over a real HTTP server (uvicorn on loopback): the event stream
(GET /v1/events) carries the node's events live and lets go of its subscription when the client
leaves; the page's files are served only with ui=True, with a strict CSP, and hold no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn

from lightspeed.api.app import create_app
from lightspeed.api.credentials import Credentials
from lightspeed.api.handlers import ApiContext
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.node.node import Node, PaymentFailed, PaymentReceived

ADMIN = "c" * 32


@contextlib.asynccontextmanager
async def served(ctx: ApiContext, ui: bool) -> AsyncIterator[str]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ctx, ADMIN, ui=ui), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def _node() -> Node:
    return Node(sha256(b"events node"), RegtestChain(":memory:"), sha256(b"events wallet"))


def test_the_event_stream_carries_node_events_and_unsubscribes_when_the_client_leaves(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = _node()
        ctx = ApiContext(node, credentials=Credentials(tmp_path))
        assert ctx.credentials is not None
        readonly, _ = ctx.credentials.create("readonly", ctx.now())
        async with served(ctx, ui=False) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            refused = await client.get("/v1/events")
            assert refused.status_code == 401
            headers = {"Authorization": f"Bearer {readonly}"}
            async with client.stream("GET", "/v1/events", headers=headers) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("retry: ")
                assert len(node.events._subscribers) == 1
                node.events.put_nowait(PaymentReceived(b"\x01" * 32, 2_500_000))
                node.events.put_nowait(PaymentFailed(b"\x02" * 32, "no route"))
                received = []
                while len(received) < 2:
                    line = await asyncio.wait_for(anext(lines), 5)
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:]))
                assert received == [
                    {"type": "payment_received", "payment_hash": "01" * 32, "amount_msat": 2_500_000},
                    {"type": "payment_failed", "payment_hash": "02" * 32, "reason": "no route"}]
            for _ in range(100):  # the server notices the client left and drops the subscription
                if not node.events._subscribers:
                    break
                await asyncio.sleep(0.05)
            assert node.events._subscribers == []
        await node.stop()

    asyncio.run(scenario())


def test_the_page_is_served_only_with_ui_and_without_a_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = _node()
        ctx = ApiContext(node, credentials=Credentials(tmp_path))
        async with served(ctx, ui=True) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            for path, kind in (("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
                response = await client.get(path)
                assert response.status_code == 200 and response.headers["content-type"].startswith(kind), path
                assert "script-src 'self'" in response.headers["content-security-policy"]
                assert ADMIN not in response.text
            assert (await client.get("/ui/../api_token")).status_code in (401, 404)
            assert (await client.get("/ui/credentials.py")).status_code == 404
            assert (await client.get("/v1/getinfo")).status_code == 401  # the API still needs its token
        async with served(ctx, ui=False) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/ui/")).status_code == 401
        await node.stop()

    asyncio.run(scenario())


def test_an_invoice_s_qr_code_encodes_the_invoice(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = _node()
        ctx = ApiContext(node, credentials=Credentials(tmp_path))
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with served(ctx, ui=True) as base, httpx.AsyncClient(base_url=base, timeout=10,
                                                                   headers=headers) as client:
            made = (await client.post("/v1/invoices", json={"amount_msat": 5000, "description": "qr"})).json()
            qr = (await client.get(f"/v1/invoices/{made['payment_hash']}/qr")).json()
            assert qr["invoice"] == made["invoice"] and qr["svg_data_uri"].startswith("data:image/svg+xml")
            missing = await client.get(f"/v1/invoices/{'00' * 32}/qr")
            assert missing.status_code == 404 and missing.json()["error"]["field"] == "payment_hash"
        await node.stop()
        import segno  # the code holds the upper-cased invoice (alphanumeric mode: a smaller code)

        assert segno.make_qr(f"LIGHTNING:{made['invoice'].upper()}", error="m").svg_data_uri(
            scale=4, dark="#000", light="#fff", border=2) == qr["svg_data_uri"]

    asyncio.run(scenario())
