"""REST endpoints that move money with BOLT 12: pay an offer, create and answer refunds.

``POST /v1/offers/pay`` fetches an invoice for an offer (onion messages, retries, a timeout),
checks it against the offer and our request, pays it over its blinded paths and answers with
the proof of payment: the signed invoice (``lni1...``), the preimage and the fee. The payment
is recorded like every other (``GET /v1/payments``, ``trackpayment``).

Refunds: ``POST /v1/refunds`` (we owe: an ``lnr1...`` for someone to claim), ``GET
/v1/refunds`` (ours, with how they ended), ``POST /v1/refunds/pay`` (we are owed: answer an
``lnr1...`` with our invoice and wait for the payment).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError, with_fee
from lightspeed.api.ledger import sent_json
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, hex_string, integer, obj, string
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.node.offers_flow import FetchedStaticInvoice, pay_invoice
from lightspeed.node.return_paths import RefundError
from lightspeed.offers import Offer, decode_offer
from lightspeed.store import RefundRecord

MAX_STRING = 7089  # as the other BOLT 12 strings the API takes (what a QR code holds)
_STR: Schema = {"type": ["string", "null"]}
_INT: Schema = {"type": ["integer", "null"]}
REFUND: Schema = {"type": "object", "properties": {
    "refund": {"type": "string"}, "payer_id": {"type": "string"}, "amount_msat": {"type": "integer"},
    "expires_at": _INT, "status": {"enum": ["open", "paying", "paid", "failed"]},
    "payment_hash": _STR, "invoice": _STR}}


async def pay_offer(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    offer = decode_offer(body["offer"])  # DecodeError names the field: 400
    try:
        # Expired or another chain: DecodeError (400) before anything is sent.
        fetched = await node.offers.fetch_any(
            offer, amount_msat=body.get("amount_msat"), quantity=body.get("quantity"),
            payer_note=body.get("payer_note"), timeout=body.get("fetch_timeout_s", 30),
            attempts=body.get("attempts", 3))
        if isinstance(fetched, FetchedStaticInvoice):  # the payee is offline: its LSP served a static invoice
            return await pay_static(ctx, offer, fetched, body.get("timeout_s", 60))
    except (UsageError, PaymentError) as exc:  # not allowed by the offer, no path, refused by the payee
        raise ApiError(409, str(exc), "offer") from None
    invoice = fetched.invoice
    payment_hash = invoice.payment_hash
    earlier = node.store.payment(payment_hash)
    if earlier is not None and earlier.status != "failed":
        raise ApiError(409, "the payee's invoice has a payment hash we already paid", "invoice_payment_hash")
    ctx.times.started[payment_hash] = ctx.now()
    timeout_s = body.get("timeout_s", 60)
    try:
        await pay_invoice(node, invoice, timeout_s)
    except (LightspeedError, TimeoutError) as exc:
        record = node.store.payment(payment_hash)
        if record is not None and record.status == "pending":
            raise ApiError(504, f"the payment is still pending after {timeout_s} s; it will end settled or failed: "
                                f"look it up by payment_hash {payment_hash.hex()} in GET /v1/payments",
                           details={"payment_hash": payment_hash.hex()}) from None
        ctx.times.settled.setdefault(payment_hash, ctx.now())
        if isinstance(exc, (PaymentError, UsageError)):
            raise ApiError(409, str(exc), "invoice", details={"payment_hash": payment_hash.hex()}) from None
        raise
    ctx.times.settled.setdefault(payment_hash, ctx.now())
    record = node.store.payment(payment_hash)
    assert record is not None  # pay_blinded stored it
    return 200, {**with_fee(ctx, sent_json(record, ctx.times)), "payee": invoice.node_id.hex(),
                 "invoice": invoice.encode(), "quantity": invoice.request.quantity,
                 "payer_note": invoice.request.payer_note, "description": invoice.request.offer.description}


async def pay_static(ctx: ApiContext, offer: Offer, fetched: FetchedStaticInvoice, timeout_s: int) -> tuple[int, Any]:
    """Pay a static invoice (async payments, the draft flow): held at our LSP until the payee is back.

    The answer is the same as for an invoice, with ``"invoice": null`` and ``"static_invoice"`` (hex):
    the preimage is ours (the draft's static invoices carry no payment hash), so the pair is no proof
    to a third party. Still pending at ``timeout_s``: 504 with the payment hash, as any payment."""
    node = ctx.node
    prepared = node.async_draft.prepare(offer, fetched.request, fetched.static_invoice)  # PaymentError: 409
    payment_hash = prepared.payment_hash
    ctx.times.started[payment_hash] = ctx.now()
    try:
        await node.async_draft.pay_prepared(prepared, timeout_s)
    except (LightspeedError, TimeoutError) as exc:
        record = node.store.payment(payment_hash)
        if record is not None and record.status == "pending":
            raise ApiError(504, f"the payment is held until the payee is back online (async payment); it will "
                                f"end settled or failed: look it up by payment_hash {payment_hash.hex()} in "
                                "GET /v1/payments", details={"payment_hash": payment_hash.hex()}) from None
        ctx.times.settled.setdefault(payment_hash, ctx.now())
        if isinstance(exc, (PaymentError, UsageError)):
            raise ApiError(409, str(exc), "static_invoice",
                           details={"payment_hash": payment_hash.hex()}) from None
        raise
    ctx.times.settled.setdefault(payment_hash, ctx.now())
    record = node.store.payment(payment_hash)
    assert record is not None  # pay_blinded stored it
    return 200, {**with_fee(ctx, sent_json(record, ctx.times)), "payee": prepared.invoice.node_id.hex(),
                 "invoice": None, "static_invoice": fetched.static_invoice.hex(),
                 "quantity": fetched.request.quantity, "payer_note": fetched.request.payer_note,
                 "description": offer.description}


def refund_json(ctx: ApiContext, record: RefundRecord) -> dict[str, Any]:
    current = ctx.node.refunds.status(record)
    return {"refund": current.refund, "payer_id": current.payer_id.hex(), "amount_msat": current.amount_msat,
            "expires_at": current.expires_at, "status": current.status,
            "payment_hash": None if current.payment_hash is None else current.payment_hash.hex(),
            "invoice": current.invoice or None}


async def create_refund(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    try:
        refund = ctx.node.refunds.create(body["amount_msat"], body.get("description", ""),
                                         absolute_expiry=body.get("absolute_expiry"))
    except UsageError as exc:  # "absolute_expiry: ... is not in the future"
        field, _, reason = str(exc).partition(": ")
        raise ApiError(400, reason, field) from None
    assert refund.payer_id is not None
    record = ctx.node.store.refund(refund.payer_id)
    assert record is not None  # create() stored it
    return 201, refund_json(ctx, record)


async def list_refunds(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    return 200, {"refunds": [refund_json(ctx, r) for r in ctx.node.store.refunds()]}


async def pay_refund(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    timeout_s = body.get("timeout_s", 30)
    try:
        answered = await ctx.node.refunds.pay(body["refund"], timeout=timeout_s)  # DecodeError: 400
    except (UsageError, PaymentError) as exc:  # no path to the refund's payer, or it refused our invoice
        raise ApiError(409, str(exc), "refund") from None
    invoice = answered.invoice
    if not answered.paid:
        raise ApiError(504, f"no payment for our invoice within {timeout_s} s; it stays payable until "
                            f"{invoice.expires_at}: look it up by payment_hash {invoice.payment_hash.hex()} "
                            "in GET /v1/invoices", details={"payment_hash": invoice.payment_hash.hex()})
    return 200, {"invoice": invoice.encode(), "payment_hash": invoice.payment_hash.hex(),
                 "amount_msat": invoice.amount_msat, "status": "paid"}


async def send_return_refund(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    payment_hash = bytes.fromhex(body["payment_hash"])  # the schema made it 64 hex digits
    try:
        paid = await ctx.node.return_paths.refund(payment_hash, body["amount_msat"],
                                                  timeout=body.get("timeout_s", 60))
    except RefundError as exc:  # amount_msat above what is left, no return path, expired path
        status = 404 if exc.reason.startswith("no payment") else 409
        raise ApiError(status, exc.reason, exc.field) from None
    except (PaymentError, UsageError, DecodeError) as exc:  # the payer's node did not answer, no route
        raise ApiError(409, str(exc), "return_path") from None
    return 200, {"payment_hash": paid.payment_hash.hex(), "amount_msat": paid.amount_msat,
                 "refunded_msat": paid.refunded_msat, "received_msat": paid.received_msat,
                 "invoice": paid.invoice, "preimage": paid.preimage.hex()}


def endpoints(payment: Schema) -> tuple[Endpoint, ...]:
    offer_payment: Schema = {**payment, "properties": {
        **payment["properties"], "invoice": _STR, "static_invoice": _STR, "quantity": _INT, "payer_note": _STR,
        "description": _STR}}
    return (
        Endpoint("POST", "/v1/offers/pay", "payOffer",
                 "Pay a BOLT 12 offer: fetch an invoice over onion messages, check it against the offer and our "
                 "request (signature, node id, amount, chain, expiry, features, paths), pay it over its blinded "
                 "paths (MPP); the signed invoice and the preimage are the proof of payment",
                 pay_offer, offer_payment,
                 body=obj({"offer": string("a BOLT 12 offer (lno1...)", 1, MAX_STRING),
                           "amount_msat": integer("the amount to pay (required when the offer has none)", 1, 2**53),
                           "quantity": integer("items, for an offer with offer_quantity_max", 1, 2**63 - 1),
                           "payer_note": string("a note for the payee", 0, max_utf8_bytes=639),
                           "fetch_timeout_s": integer("how long to wait for the invoice, all attempts together",
                                                      1, 120),
                           "attempts": integer("invoice requests sent (each with a new reply path)", 1, 10),
                           "timeout_s": integer("give up waiting for the payment after this many seconds", 1, 600)},
                          ["offer"])),
        Endpoint("POST", "/v1/refunds", "createRefund",
                 "A BOLT 12 refund (lnr1...) from this node: whoever answers it with an invoice (over the blinded "
                 "reply path in it) is paid its amount, once", create_refund, REFUND, status=201,
                 body=obj({"amount_msat": integer("the amount to refund", 1, 2**53),
                           "description": string("what the refund is for", 0, max_utf8_bytes=639),
                           "absolute_expiry": integer("unix seconds after which no invoice for it is paid "
                                                      "(default: a day from now)", 0, 2**63 - 1)},
                          ["amount_msat"])),
        Endpoint("GET", "/v1/refunds", "listRefunds", "The refunds this node created and how each ended",
                 list_refunds, {"type": "object", "properties": {"refunds": {"type": "array", "items": REFUND}}}),
        Endpoint("POST", "/v1/refunds/pay", "payRefund",
                 "Claim a BOLT 12 refund (lnr1...) owed to this node: send our invoice over its paths and wait "
                 "until the refund's payer pays it (504 with the payment hash if it did not in time)",
                 pay_refund, {"type": "object", "properties": {
                     "invoice": {"type": "string"}, "payment_hash": {"type": "string"},
                     "amount_msat": {"type": "integer"}, "status": {"enum": ["paid"]}}},
                 body=obj({"refund": string("a BOLT 12 refund (lnr1...)", 1, MAX_STRING),
                           "timeout_s": integer("how long to wait for the payment", 1, 600)}, ["refund"])),
        Endpoint("POST", "/v1/refunds/send", "sendReturnRefund",
                 "Refund part or all of a received payment through the blinded return path its payer sent "
                 "with it (the payer stays anonymous); the running total never exceeds what was received",
                 send_return_refund, {"type": "object", "properties": {
                     "payment_hash": {"type": "string"}, "amount_msat": {"type": "integer"},
                     "refunded_msat": {"type": "integer"}, "received_msat": {"type": "integer"},
                     "invoice": {"type": "string"}, "preimage": {"type": "string"}}},
                 body=obj({"payment_hash": hex_string(32, "the received payment to refund"),
                           "amount_msat": integer("how much of it to refund now", 1, 2**53),
                           "timeout_s": integer("how long to wait for the refund to settle", 1, 600)},
                          ["payment_hash", "amount_msat"])),
    )
