"""REST handlers for BOLT 12 over onion messages: make an offer, fetch an invoice for one, decode.

Paying the fetched invoice (over its blinded paths) is the node's blinded-payment side; this
returns the invoice checked against our request, which with its preimage is the proof of payment.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.errors import PaymentError, UsageError
from lightspeed.offers import Invoice, bolt12_to_json, decode_offer


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {"invoice": invoice.encode(), "amount_msat": invoice.amount_msat,
            "payment_hash": invoice.payment_hash.hex(), "node_id": invoice.node_id.hex(),
            "created_at": invoice.created_at, "expires_at": invoice.expires_at,
            "quantity": invoice.request.quantity, "payer_note": invoice.request.payer_note}


async def create_offer(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    if body.get("static_invoice_lsp") is not None:
        return await create_static_offer(ctx, body)
    try:
        offer = ctx.node.offers.create_offer(
            body["description"], body.get("amount_msat"), absolute_expiry=body.get("absolute_expiry"),
            quantity_max=body.get("quantity_max"), issuer=body.get("issuer"))
    except UsageError as exc:
        raise ApiError(400, str(exc), "offer") from None
    return 201, {"offer": offer.encode(), "amount_msat": offer.amount_msat, "description": offer.description,
                 "absolute_expiry": offer.absolute_expiry, "quantity_max": offer.quantity_max,
                 "issuer_id": ctx.node.node_id.hex()}


async def create_static_offer(ctx: ApiContext, body: Any) -> tuple[int, Any]:
    """An offer whose invoice requests our LSP answers with a static invoice of ours while we are
    offline (async payments, the draft flow: node/async_draft.py); the LSP must have us registered."""
    if body.get("amount_msat") is None:
        raise ApiError(400, "needed with static_invoice_lsp: a static invoice is for a fixed price", "amount_msat")
    if body.get("quantity_max") is not None:
        raise ApiError(400, "not supported with static_invoice_lsp (the price is fixed)", "quantity_max")
    lsp_id = bytes.fromhex(body["static_invoice_lsp"])  # the schema made it 66 hex digits
    try:
        offer, static = await ctx.node.async_draft.publish_static_invoice(
            lsp_id, body["description"], body["amount_msat"], absolute_expiry=body.get("absolute_expiry"),
            issuer=body.get("issuer"))
    except UsageError as exc:  # no channel or path through that LSP
        raise ApiError(409, str(exc), "static_invoice_lsp") from None
    except TimeoutError:
        raise ApiError(409, "the LSP did not confirm it keeps our static invoice (is it an LSP, and are we "
                            "registered with it: lsp register?)", "static_invoice_lsp") from None
    return 201, {"offer": offer.encode(), "amount_msat": offer.amount_msat, "description": offer.description,
                 "absolute_expiry": offer.absolute_expiry, "quantity_max": offer.quantity_max,
                 "issuer_id": ctx.node.node_id.hex(), "static_invoice_lsp": lsp_id.hex(),
                 "static_invoice_expires_at": static.created_at + static.relative_expiry}


async def fetch_invoice(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    offer = decode_offer(body["offer"])  # DecodeError names the field: 400
    began = time.monotonic()
    try:
        fetched = await ctx.node.offers.fetch_invoice(
            offer, amount_msat=body.get("amount_msat"), quantity=body.get("quantity"),
            payer_note=body.get("payer_note"), timeout=body.get("timeout_s", 30), attempts=body.get("attempts", 3))
    except UsageError as exc:  # a request the offer does not allow, or no path to the issuer now
        raise ApiError(409, str(exc), "offer") from None
    except PaymentError as exc:  # the payee refused, or its invoice does not match our request
        raise ApiError(409, str(exc), "offer") from None
    return 200, {**invoice_json(fetched.invoice), "elapsed_ms": round((time.monotonic() - began) * 1000)}


async def decode_bolt12(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """``lightspeed offer decode`` over REST: the same JSON object; a bad string is a 400 naming the field."""
    return 200, bolt12_to_json(body["string"])  # DecodeError: 400 with its field
