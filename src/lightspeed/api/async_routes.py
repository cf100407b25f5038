"""REST routes of async payments (issue 14): register with an LSP and list them, pay asynchronously,
list held HTLCs.

Kept apart from :mod:`lightspeed.api.app` like :mod:`lightspeed.api.ops_routes`; ``app.ENDPOINTS``
includes :func:`endpoints`. The node does the work (:mod:`lightspeed.node.async_runtime`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.ledger import sent_json
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, node_id, obj, string
from lightspeed.errors import DecodeError, LightspeedError, UsageError
from lightspeed.invoice import Invoice, decode
from lightspeed.node.async_runtime import AsyncPayment
from lightspeed.store import PaymentRecord

MAX_INVOICE_LENGTH = 7089  # as app.py's payInvoice (app.py imports this module: not the reverse)

_LIMITS: Schema = {"type": "object", "properties": {
    "max_hold_seconds": {"type": "integer"}, "max_htlcs_per_client": {"type": "integer"},
    "max_held_msat_per_client": {"type": "integer"}, "safety_margin_blocks": {"type": "integer"}}}
_HELD: Schema = {"type": "object", "properties": {
    "htlc": {"type": "string"}, "client_id": {"type": "string"}, "payment_hash": {"type": "string"},
    "amount_msat": {"type": "integer"}, "cltv_expiry": {"type": "integer"}, "held_at": {"type": "integer"},
    "fail_at": {"type": "integer"}, "fail_height": {"type": "integer"}}}

_REGISTRATION: Schema = {"type": "object", "properties": {
    "lsp_id": {"type": "string"}, "webhook": {"type": ["string", "null"]}, "registered_at": {"type": "integer"},
    "connected": {"type": "boolean"}}}


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


async def registrations(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """The LSPs we registered with (``lsp register``, persisted), oldest first, and whether each is
    connected now: the one an async payment without ``lsp_id`` (and automatic async) uses is the
    only entry, and only while it is connected."""
    lsps = [{"lsp_id": lsp_id.hex(), "webhook": webhook, "registered_at": registered_at,
             "connected": ctx.node.peer(lsp_id) is not None}
            for lsp_id, webhook, registered_at in ctx.node.store.lsp_registrations()]
    return 200, {"lsps": lsps}


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
    payment = await start(ctx, invoice, bytes.fromhex(body["lsp_id"]) if "lsp_id" in body else None)
    return 202, {"payment_hash": invoice.payment_hash.hex(), "amount_msat": payment.amount_msat,
                 "lsp_id": payment.lsp_id.hex(), "status": "pending"}


async def start(ctx: ApiContext, invoice: Invoice, lsp_id: bytes | None) -> AsyncPayment:
    """Start an async payment through ``lsp_id`` (None: the LSP we registered with); a refusal is a
    409 naming its field (``lsp_id`` for the LSP's choice, else ``invoice``)."""
    try:
        payment = await ctx.node.asyncpay.pay_async(invoice, lsp_id)
    except LightspeedError as exc:
        field_, sep, reason = str(exc).partition(": ")
        if sep and field_ in ("lsp_id", "invoice"):
            raise ApiError(409, reason, field_) from None
        raise ApiError(409, str(exc), "invoice") from None

    async def follow() -> None:  # the payment ends settled or failed later; the store has it
        await asyncio.gather(payment.task, return_exceptions=True)

    ctx.spawn(follow(), "async payment")
    return payment


async def pay_automatically(ctx: ApiContext, invoice: Invoice, body: Any) -> tuple[int, Any] | None:
    """``POST /v1/payments`` of an invoice whose payee is a client of our LSP (``automatic_lsp``'s
    rule): paid asynchronously, answered at once with the pending payment and ``async_lsp_id``.
    None: pay it the usual way. Not with a fee limit, a return path, a first channel or a part
    count: the async flow honours none of them yet, and a limit the caller set must hold."""
    if any(key in body for key in ("return_path", "outgoing_channel", "max_parts", "max_fee_msat", "max_fee_ppm")):
        return None
    lsp_id = ctx.node.asyncpay.automatic_lsp(invoice)
    if lsp_id is None:
        return None
    payment = await start(ctx, invoice, lsp_id)
    assert invoice.amount_msat is not None  # automatic_lsp asks for it
    entry = sent_json(PaymentRecord(invoice.payment_hash, invoice.amount_msat, "pending", invoice.encode()),
                      ctx.times)
    return 200, {**entry, "fee_msat": None, "async_lsp_id": payment.lsp_id.hex()}


def endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint("POST", "/v1/lsp/register", "lspRegister",
                 "Ask a peer LSP to keep our onion messages while we are offline and wake us at a webhook "
                 "(signed onion message); returns its announced hold limits", register,
                 {"type": "object", "properties": {"lsp_id": {"type": "string"}, "limits": _LIMITS}},
                 body=obj({"lsp_id": node_id("the LSP's node id"),
                           "webhook": string("https URL the LSP POSTs LSPS5 notifications to", 1, 1024)},
                          ["lsp_id"])),
        Endpoint("GET", "/v1/lsp", "lspList",
                 "The LSPs this node registered with (oldest first), each with its webhook, when it was "
                 "registered and whether it is connected now", registrations,
                 {"type": "object", "properties": {"lsps": {"type": "array", "items": _REGISTRATION}}}),
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
                           "lsp_id": node_id("our LSP (a peer), which holds the HTLC; absent: the one LSP we "
                                             "registered with (POST /v1/lsp/register)")}, ["invoice"]),
                 status=202),
    )
