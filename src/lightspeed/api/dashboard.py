"""The web dashboard's server side: its static files, live events (SSE) and invoice QR codes.

The page itself (``api/ui/``: plain HTML, JS and CSS, no build step, nothing from a CDN) holds
no secret, so ``/ui/`` is served without a token; every call it makes is an ordinary REST call
with ``Authorization: Bearer <token>``, the token pasted at login and kept in sessionStorage.
Live updates come from ``GET /v1/events``, a ``text/event-stream`` of the node's event bus read
with ``fetch`` (the browser's EventSource cannot send the Authorization header).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import hex_string

KEEPALIVE_S = 15.0
MAX_QUEUED_EVENTS = 256  # a client that stops reading loses events beyond this (it refetches anyway)
_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
# The page runs only its own script and style; QR codes are inline SVG the page inserts itself.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def event_json(event: Any) -> dict[str, Any]:
    """A node event as JSON: its kind in snake case and its fields (bytes as hex; never a preimage)."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()
    fields: dict[str, Any] = {}
    if dataclasses.is_dataclass(event):
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            if f.name == "preimage":
                continue
            fields[f.name] = value.hex() if isinstance(value, bytes) else value
    return {"type": kind, **{k: v for k, v in fields.items() if isinstance(v, (str, int, bool, type(None)))}}


async def events(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue(MAX_QUEUED_EVENTS)

    async def pump(subscription: AsyncIterator[Any]) -> None:
        async for event in subscription:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    async def stream() -> AsyncIterator[str]:
        # Subscribed only once the response streams (a request dropped before leaves no queue behind);
        # the subscription ends with the pump task, when the client goes.
        task = asyncio.create_task(pump(ctx.node.events()))
        try:
            yield "retry: 3000\n: subscribed\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                data = event_json(event)
                yield f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"
        finally:
            task.cancel()

    return 200, StreamingResponse(stream(), media_type="text/event-stream",
                                  headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def invoice_qr(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    import segno  # only the dashboard needs it

    payment_hash = bytes.fromhex(request.path_params["payment_hash"])
    record = ctx.node.store.invoice(payment_hash)
    if record is None:
        raise ApiError(404, f"no invoice {payment_hash.hex()}", "payment_hash")
    text = record.invoice
    # BOLT 11 is bech32: upper case fits QR's alphanumeric mode (a smaller code for the same invoice).
    qr = segno.make_qr(f"LIGHTNING:{text.upper()}", error="m")
    return 200, {"invoice": text, "svg_data_uri": qr.svg_data_uri(scale=4, dark="#000", light="#fff", border=2)}


def endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint("GET", "/v1/events", "events",
                 "The node's events as they happen (text/event-stream: payment_received, payment_sent, "
                 "payment_failed, forward_settled, htlc_held, broadcast_rejected), with a comment line "
                 f"every {KEEPALIVE_S:.0f} s", events, {"type": "string"}),
        Endpoint("GET", "/v1/invoices/{payment_hash}/qr", "invoiceQr",
                 "An invoice as a QR code: an SVG data: URI of the BOLT 11 string, upper-cased, with the "
                 "lightning: scheme", invoice_qr, {"type": "object", "properties": {
                     "invoice": {"type": "string"}, "svg_data_uri": {"type": "string"}}},
                 path_params=(("payment_hash", hex_string(32, "a payment hash: 32 bytes in hex")),)),
    )


async def _static(request: Request) -> Response:
    name = request.path_params.get("name", "index.html")
    media = _FILES.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    data = resources.files("lightspeed.api").joinpath("ui", name).read_bytes()
    return Response(data, media_type=media, headers={
        "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store"})


UI_PREFIX = "/ui"


def static_routes() -> list[Route]:
    """``/ui/`` and its three files, served without a token (they hold none)."""
    return [Route("/ui", _static, methods=["GET"]), Route("/ui/", _static, methods=["GET"]),
            Route("/ui/{name}", _static, methods=["GET"])]
