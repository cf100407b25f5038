"""REST routes of async payments (issue 14): register with an LSP, pay asynchronously, list held HTLCs.

Kept apart from :mod:`lightspeed.api.app` like :mod:`lightspeed.api.ops_routes`; ``app.ENDPOINTS``
includes :func:`endpoints`. The node does the work (:mod:`lightspeed.node.async_runtime`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, node_id, obj, string
from lightspeed.errors import DecodeError, LightspeedError, UsageError
from lightspeed.invoice import decode

MAX_INVOICE_LENGTH = 7089  # as app.py's payInvoice (app.py imports this module: not the reverse)

_LIMITS: Schema = {"type": "object", "properties": {
    "max_hold_seconds": {"type": "integer"}, "max_htlcs_per_client": {"type": "integer"},
    "max_held_msat_per_client": {"type": "integer"}, "safety_margin_blocks": {"type": "integer"}}}
_HELD: Schema = {"type": "object", "properties": {
    "htlc": {"type": "string"}, "client_id": {"type": "string"}, "payment_hash": {"type": "string"},
    "amount_msat": {"type": "integer"}, "cltv_expiry": {"type": "integer"}, "held_at": {"type": "integer"},
    "fail_at": {"type": "integer"}, "fail_height": {"type": "integer"}}}


async def register(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    lsp_id = bytes.fromhex(body["lsp_id"])
    try:
        reply = await ctx.node.asyncpay.register_with(lsp_id, body.get("webhook"))
    except TimeoutError:
        raise ApiError(504, f"{lsp_id.hex()} did not answer: is it an LSP (node start --lsp), reachable "
                            "by onion messages?", "lsp_id") from None
    except UsageError as exc:
        raise ApiError(409, str(exc), "lsp_id") from None
    return 200, {"lsp_id": lsp_id.hex(), "limits": reply["limits"]}


async def held(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    lsp = ctx.node.async_lsp
    if lsp is None:
        raise ApiError(409, "this node is not an LSP (start it with --lsp)", "lsp")
    return 200, {"limits": lsp.book.limits.announce(), "held": ctx.node.asyncpay.held_json(),
                 "clients": [{"node_id": r.node_id.hex(), "webhook": r.webhook_url}
                             for r in lsp.store.registrations()]}


async def pay_async(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    try:
        invoice = decode(body["invoice"])
    except DecodeError as exc:
        raise DecodeError("invoice", f"{exc.field}: {exc.reason}") from None
    if invoice.is_expired(ctx.now()):
        raise ApiError(409, f"the invoice expired at {invoice.expires_at}", "invoice")
    earlier = node.store.payment(invoice.payment_hash)
    if earlier is not None and earlier.status != "failed":
        raise ApiError(409, "this invoice is already paid or being paid", "invoice")
    lsp_id = bytes.fromhex(body["lsp_id"])
    try:
        payment = await node.asyncpay.pay_async(invoice, lsp_id)
    except (UsageError, LightspeedError) as exc:
        raise ApiError(409, str(exc), "invoice") from None

    async def follow() -> None:  # the payment ends settled or failed later; the store has it
        await asyncio.gather(payment.task, return_exceptions=True)

    ctx.spawn(follow(), "async payment")
    return 202, {"payment_hash": invoice.payment_hash.hex(), "amount_msat": payment.amount_msat,
                 "lsp_id": lsp_id.hex(), "status": "pending"}


def endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint("POST", "/v1/lsp/register", "lspRegister",
                 "Ask a peer LSP to keep our onion messages while we are offline and wake us at a webhook "
                 "(signed onion message); returns its announced hold limits", register,
                 {"type": "object", "properties": {"lsp_id": {"type": "string"}, "limits": _LIMITS}},
                 body=obj({"lsp_id": node_id("the LSP's node id"),
                           "webhook": string("https URL the LSP POSTs LSPS5 notifications to", 1, 1024)},
                          ["lsp_id"])),
        Endpoint("GET", "/v1/lsp/held", "lspHeld",
                 "As an LSP: the HTLCs held for clients' async payments, the limits, the registered clients",
                 held, {"type": "object", "properties": {
                     "limits": _LIMITS, "held": {"type": "array", "items": _HELD},
                     "clients": {"type": "array", "items": {"type": "object"}}}}),
        Endpoint("POST", "/v1/payments/async", "payAsync",
                 "Pay an invoice whose payee may be offline: our LSP holds the HTLC until the payee unblocks "
                 "it (LightningRod); returns at once, the payment ends in GET /v1/payments", pay_async,
                 {"type": "object", "properties": {"payment_hash": {"type": "string"},
                                                   "amount_msat": {"type": "integer"},
                                                   "lsp_id": {"type": "string"}, "status": {"type": "string"}}},
                 body=obj({"invoice": string("a BOLT 11 invoice with an amount", 1, MAX_INVOICE_LENGTH),
                           "lsp_id": node_id("our LSP (a peer), which holds the HTLC")}, ["invoice", "lsp_id"]),
                 status=202),
    )
