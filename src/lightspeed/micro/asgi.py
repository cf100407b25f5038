"""ASGI middleware: per-route prices in hash-chain links, HTTP 402 offers, allowance endpoints.

Wraps any ASGI application (Starlette, FastAPI, Litestar, ...). A priced request carries
``Lightspeed-Token``; the middleware checks it with :meth:`AllowanceServer.spend` (one
hash, one store update) and passes the request on, adding ``Lightspeed-Remaining`` (and
``Lightspeed-Invoice`` when a batch is due soon) to the response. Anything else gets a
JSON refusal: 402 with the offer (and an invoice when paying one helps), 401 for a
replayed or forged token, 400 for a malformed one (naming the header), 429 with
``Retry-After`` when a client asks for allowances too fast, 503 ``store_unavailable`` (naming
the file and the reason) while the spent-state store cannot be used (full disk, read-only file).

Header values are checked here, never echoed: a value with stray spaces or control
characters is a 400 ``bad_token``, and nothing the client sent goes into a response header
(an HTTP library refuses to write such a header, and the request would fail with a 500).

Endpoints under ``prefix`` (default ``/lightspeed``):

* ``GET  {prefix}/offer``: the terms.
* ``POST {prefix}/allowances``: body ``{calls_per_lane, anchors, batch_calls}``; 201 with the
  allowance and its invoice.
* ``GET  {prefix}/allowances/{id}``: status, paid and spent calls, refund.
* ``POST {prefix}/allowances/{id}/close``: body ``{token}``; the refund due, and (a server with
  automatic refunds) ``refund``: its payment through the payment's return path, waited for up to
  ``refund_wait`` seconds (``status`` paid, in_flight, failed, not_refundable or none).
* ``POST {prefix}/allowances/{id}/refund``: body ``{token, invoice}``; pays the refund: 200
  when paid, 202 while in flight (with the invoice being paid), 502 when it failed.

Rate limits key clients by ``client_key(scope)``: by default the remote address (IPv6 by
/64). Behind a reverse proxy every client has the proxy's address: pass a ``client_key``
that reads the forwarded address the proxy sets (and only from that proxy).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from lightspeed.errors import DecodeError, StorageUnavailable
from lightspeed.micro.ratelimit import client_key as address_key
from lightspeed.micro.server import AllowanceServer, CallRefused
from lightspeed.micro.token import ALLOWANCE_HEADER, TOKEN_HEADER, AllowanceRequest, Token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 64 * 1024
STORE_RETRY_SECONDS = 30  # Retry-After of a 503 while the store's file cannot be used
_TOKEN = TOKEN_HEADER.encode()
_ALLOWANCE = ALLOWANCE_HEADER.encode()
_HEADER_NAMES = {_TOKEN: "Lightspeed-Token", _ALLOWANCE: "Lightspeed-Allowance"}
_REFUND_HTTP = {"paid": 200, "none": 200, "in_flight": 202, "due": 202, "failed": 502}


class HeaderError(DecodeError):
    """A Lightspeed request header that cannot be used; ``header`` names it."""

    def __init__(self, header: str, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.header = header


def remote_address(scope: Scope) -> str:
    """The default client key: the peer's address from the ASGI scope (IPv6 by /64)."""
    client = scope.get("client")
    return address_key(client[0] if client else None)


class LightspeedMiddleware:
    """Charge ``prices[path prefix]`` links per request; unpriced paths pass through free."""

    def __init__(self, app: ASGIApp, server: AllowanceServer, prices: Mapping[str, int],
                 prefix: str = "/lightspeed",
                 client_key: Callable[[Scope], str] = remote_address, refund_wait: float = 20.0) -> None:
        if any(cost < 1 for cost in prices.values()):
            raise ValueError("prices: every priced route costs at least one link")
        if not prefix.startswith("/") or not prefix.isascii() or not prefix.isprintable() or any(
                c in prefix for c in ' "\\'):
            raise ValueError("prefix: a path starting with / (it goes into the WWW-Authenticate header)")
        self.app, self.server, self.prefix = app, server, prefix.rstrip("/")
        self.client_key = client_key
        self.refund_wait = refund_wait
        # Longest prefix first, so "/api/premium" wins over "/api"; each with its "/"-ended form
        # made once (not on every request).
        self._prices = [(prefix, prefix.rstrip("/") + "/", cost)
                        for prefix, cost in sorted(prices.items(), key=lambda item: -len(item[0]))]

    def cost(self, path: str) -> int | None:
        for prefix, below, cost in self._prices:
            if path == prefix or path.startswith(below):
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
        try:
            token_value, allowance_value = _lightspeed_headers(scope["headers"])
            if token_value is None:
                if allowance_value is not None:
                    request = _parse(ALLOWANCE_HEADER, AllowanceRequest.parse, allowance_value)
                    terms = await self.server.create(request, self.client_key(scope))
                    await _json(send, 402, {"error": {"code": "unpaid", "reason": "pay the invoice, then "
                                            "retry with a token"}, "lightspeed": self._offer(cost),
                                            "allowance": terms.public_json()}, self.prefix)
                    return
                raise CallRefused("no_token", f"this route costs {cost} link(s) of a Lightspeed allowance")
            receipt = await self.server.spend(_token(token_value), cost)
        except HeaderError as exc:
            code = "bad_token" if exc.header == _HEADER_NAMES[_TOKEN] else "bad_request"
            await _json(send, 400, {"error": {"code": code, "header": exc.header, "field": exc.field,
                                              "reason": exc.reason}, "lightspeed": self._offer(cost)})
            return
        except CallRefused as exc:
            await _json(send, exc.http_status, {"error": exc.to_json(), "lightspeed": self._offer(cost)},
                        self.prefix, exc.retry_after)
            return
        except StorageUnavailable as exc:
            await _store_unavailable(send, exc)
            return
        extra = [(b"lightspeed-remaining", b"%d" % receipt.remaining_calls)]
        if receipt.next_invoice is not None:
            extra.append((b"lightspeed-invoice", receipt.next_invoice.encode()))

        async def send_with_receipt(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_receipt)

    def _offer(self, cost: int) -> dict[str, object]:
        return {**self.server.offer(cost), "allowances_url": f"{self.prefix}/allowances"}

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send, sub: str) -> None:
        method = scope["method"]
        try:
            if sub == "/offer" and method == "GET":
                await _json(send, 200, {"lightspeed": self._offer(1)})
            elif sub == "/allowances" and method == "POST":
                request = AllowanceRequest.from_json(await _body(receive))
                terms = await self.server.create(request, self.client_key(scope))
                await _json(send, 201, {"allowance": terms.public_json()}, self.prefix)
            elif sub.startswith("/allowances/"):
                parts = sub.split("/")  # "", "allowances", id, [action]
                allowance_id = _allowance_id(parts[2])
                action = parts[3] if len(parts) == 4 else ""
                if action == "" and method == "GET":
                    await _json(send, 200, await self.server.status(allowance_id))
                elif action == "close" and method == "POST":
                    token = _token_for(await _body(receive), allowance_id)
                    answer: dict[str, object] = {"refund_msat": await self.server.close(token)}
                    auto = await self.server.auto_refund(allowance_id, wait=self.refund_wait)
                    if auto is not None:  # paid back through the payment's return path
                        answer["refund"] = auto.to_json()
                    await _json(send, 200, answer)
                elif action == "refund" and method == "POST":
                    body = await _body(receive)
                    invoice = body.get("invoice") if isinstance(body, dict) else None
                    if not isinstance(invoice, str):
                        raise DecodeError("invoice", "expected a BOLT 11 invoice string")
                    view = await self.server.refund(_token_for(body, allowance_id), invoice)
                    answer = view.to_json()
                    if view.status == "failed":
                        answer["error"] = {"code": "refund_failed", "reason": view.reason or "the "
                                           "payment failed; post a new invoice to try again"}
                    await _json(send, _REFUND_HTTP[view.status], answer)
                else:
                    await _json(send, 404, {"error": {"code": "not_found", "reason": sub}})
            else:
                await _json(send, 404, {"error": {"code": "not_found", "reason": sub}})
        except DecodeError as exc:
            await _json(send, 400, {"error": {"code": "bad_request", "field": exc.field, "reason": exc.reason}})
        except CallRefused as exc:
            await _json(send, exc.http_status, {"error": exc.to_json()}, self.prefix, exc.retry_after)
        except StorageUnavailable as exc:
            await _store_unavailable(send, exc)


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


def _lightspeed_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The token and allowance header values; either sent twice is refused (which one counts
    would depend on the proxy in between)."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _HEADER_NAMES:
            if name in found:
                raise HeaderError(_HEADER_NAMES[name], "header", "sent more than once")
            found[name] = value
    return found.get(_TOKEN), found.get(_ALLOWANCE)


def _parse(header: str, parse: Callable[[str], Any], value: bytes) -> Any:
    """Parse a header value; any fault is a :class:`HeaderError` naming the header."""
    name = _HEADER_NAMES[header.encode()]
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise HeaderError(name, "header", "not ASCII") from None
    try:
        return parse(text)
    except DecodeError as exc:
        raise HeaderError(name, exc.field, exc.reason) from None


def _token(value: bytes) -> Token:
    """The Lightspeed-Token header's token (its fast path: no decode, one match); any fault is a
    :class:`HeaderError` naming the header, as :func:`_parse` gives."""
    try:
        return Token.from_header(value)
    except UnicodeDecodeError:
        raise HeaderError(_HEADER_NAMES[_TOKEN], "header", "not ASCII") from None
    except DecodeError as exc:
        raise HeaderError(_HEADER_NAMES[_TOKEN], exc.field, exc.reason) from None


async def _store_unavailable(send: Send, exc: StorageUnavailable) -> None:
    """503: the spent-state store cannot be used now (full disk, read-only file); nothing was spent."""
    await _json(send, 503, {"error": {"code": "store_unavailable", "reason": str(exc)}},
                retry_after=STORE_RETRY_SECONDS)


async def _json(send: Send, status: int, body: object, prefix: str = "/lightspeed",
                retry_after: int | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 402:
        headers.append((b"www-authenticate", f'Lightspeed offer="{prefix}/offer"'.encode()))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
