"""ASGI middleware: per-route prices in hash-chain links, HTTP 402 offers, allowance endpoints.

Wraps any ASGI application (Starlette, FastAPI, Litestar, ...). A priced request carries
``Lightspeed-Token``; the middleware checks it with :meth:`AllowanceServer.spend` (one
hash, one store update) and passes the request on, adding ``Lightspeed-Remaining`` (and
``Lightspeed-Invoice`` when a batch is due soon) to the response. Anything else gets a
JSON refusal: 402 with the offer (and an invoice when paying one helps), 401 for a
replayed or forged token, 400 for a malformed one.

Endpoints under ``prefix`` (default ``/lightspeed``):

* ``GET  {prefix}/offer``: the terms.
* ``POST {prefix}/allowances``: body ``{calls_per_lane, anchors, batch_calls}``; 201 with the
  allowance and its invoice.
* ``GET  {prefix}/allowances/{id}``: status, paid and spent calls, refund.
* ``POST {prefix}/allowances/{id}/close``: body ``{token}``; the refund due.
* ``POST {prefix}/allowances/{id}/refund``: body ``{token, invoice}``; pays the refund.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from lightspeed.errors import DecodeError
from lightspeed.micro.ratelimit import RateLimiter
from lightspeed.micro.server import AllowanceServer, CallRefused
from lightspeed.micro.terms import AllowanceTerms
from lightspeed.micro.token import ALLOWANCE_HEADER, TOKEN_HEADER, AllowanceRequest, Token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 64 * 1024
_TOKEN = TOKEN_HEADER.encode()
_ALLOWANCE = ALLOWANCE_HEADER.encode()


class LightspeedMiddleware:
    """Charge ``prices[path prefix]`` links per request; unpriced paths pass through free."""

    def __init__(self, app: ASGIApp, server: AllowanceServer, prices: Mapping[str, int],
                 prefix: str = "/lightspeed") -> None:
        if any(cost < 1 for cost in prices.values()):
            raise ValueError("prices: every priced route costs at least one link")
        self.app, self.server, self.prefix = app, server, prefix.rstrip("/")
        self._creates = RateLimiter(server.policy.creates_per_minute)
        # Longest prefix first, so "/api/premium" wins over "/api".
        self._prices = sorted(prices.items(), key=lambda item: -len(item[0]))

    def cost(self, path: str) -> int | None:
        for prefix, cost in self._prices:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return cost
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(self.prefix + "/"):
            await self._endpoint(scope, receive, send, path[len(self.prefix):])
            return
        cost = self.cost(path)
        if cost is None:
            await self.app(scope, receive, send)
            return
        token_value = allowance_value = None
        for name, value in scope["headers"]:
            if name == _TOKEN:
                token_value = value
            elif name == _ALLOWANCE:
                allowance_value = value
        try:
            if token_value is None:
                if allowance_value is not None:
                    terms = await self._create(scope, AllowanceRequest.parse(allowance_value.decode("latin-1")))
                    await _json(send, 402, {"error": {"code": "unpaid", "reason": "pay the invoice, then "
                                            "retry with a token"}, "lightspeed": self._offer(cost),
                                            "allowance": terms.public_json()}, self.prefix)
                    return
                raise CallRefused("no_token", f"this route costs {cost} link(s) of a Lightspeed allowance")
            receipt = await self.server.spend(Token.parse(token_value.decode("latin-1")), cost)
        except DecodeError as exc:
            await _json(send, 400, {"error": {"code": "bad_token", "field": exc.field,
                                              "reason": exc.reason}, "lightspeed": self._offer(cost)})
            return
        except CallRefused as exc:
            await _json(send, exc.http_status, {"error": exc.to_json(), "lightspeed": self._offer(cost)},
                        self.prefix, exc.retry_after)
            return
        extra = [(b"lightspeed-remaining", str(receipt.remaining_calls).encode())]
        if receipt.next_invoice is not None:
            extra.append((b"lightspeed-invoice", receipt.next_invoice.encode()))

        async def send_with_receipt(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_receipt)

    async def _create(self, scope: Scope, request: AllowanceRequest) -> AllowanceTerms:
        """Sell an allowance, within the client address's rate (each costs an invoice and a row)."""
        client = scope.get("client")
        wait = self._creates.take(str(client[0]) if client else "?", time.monotonic())
        if wait:
            raise CallRefused("rate_limited", "too many allowances asked for from this address; retry later",
                              429, retry_after=max(1, math.ceil(wait)))
        return await self.server.create(request)

    def _offer(self, cost: int) -> dict[str, object]:
        return {**self.server.offer(cost), "allowances_url": f"{self.prefix}/allowances"}

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send, sub: str) -> None:
        method = scope["method"]
        try:
            if sub == "/offer" and method == "GET":
                await _json(send, 200, {"lightspeed": self._offer(1)})
            elif sub == "/allowances" and method == "POST":
                request = AllowanceRequest.from_json(await _body(receive))
                terms = await self._create(scope, request)
                await _json(send, 201, {"allowance": terms.public_json()}, self.prefix)
            elif sub.startswith("/allowances/"):
                parts = sub.split("/")  # "", "allowances", id, [action]
                allowance_id = _allowance_id(parts[2])
                action = parts[3] if len(parts) == 4 else ""
                if action == "" and method == "GET":
                    await _json(send, 200, await self.server.status(allowance_id))
                elif action == "close" and method == "POST":
                    token = _token_for(await _body(receive), allowance_id)
                    await _json(send, 200, {"refund_msat": await self.server.close(token)})
                elif action == "refund" and method == "POST":
                    body = await _body(receive)
                    invoice = body.get("invoice") if isinstance(body, dict) else None
                    if not isinstance(invoice, str):
                        raise DecodeError("invoice", "expected a BOLT 11 invoice string")
                    refund = await self.server.refund(_token_for(body, allowance_id), invoice)
                    # 202: in flight (it may still settle: ask again, never with hope of a second
                    # payment); 502: definitively failed (a new invoice may be tried); else 200.
                    code = {"in_flight": 202, "failed": 502}.get(refund.status, 200)
                    await _json(send, code, refund.to_json())
                else:
                    await _json(send, 404, {"error": {"code": "not_found", "reason": sub}})
            else:
                await _json(send, 404, {"error": {"code": "not_found", "reason": sub}})
        except DecodeError as exc:
            await _json(send, 400, {"error": {"code": "bad_request", "field": exc.field, "reason": exc.reason}})
        except CallRefused as exc:
            await _json(send, exc.http_status, {"error": exc.to_json()}, self.prefix, exc.retry_after)


def _allowance_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise DecodeError("allowance_id", "not hexadecimal") from None
    if len(raw) != 16:
        raise DecodeError("allowance_id", "expected 16 bytes")
    return raw


def _token_for(body: object, allowance_id: bytes) -> Token:
    value = body.get("token") if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise DecodeError("token", "expected a token string")
    token = Token.parse(value)
    if token.allowance_id != allowance_id:
        raise DecodeError("token", "belongs to another allowance")
    return token


async def _body(receive: Receive) -> object:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise DecodeError("body", f"larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        return json.loads(b"".join(chunks) or b"null")
    except ValueError:
        raise DecodeError("body", "not JSON") from None


async def _json(send: Send, status: int, body: object, prefix: str = "/lightspeed",
                retry_after: int | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if status == 402:
        headers.append((b"www-authenticate", f'Lightspeed offer="{prefix}/offer"'.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
