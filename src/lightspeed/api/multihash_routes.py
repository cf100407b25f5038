"""REST routes for multi-hash requests and refund declarations (issue 15 part 4).

``POST /v1/multihash`` (payee: create a signed request, one invoice per part),
``POST /v1/multihash/status`` (payee: where a request of ours stands; ``deliver`` once all are paid),
``POST /v1/multihash/verify`` (anyone: check a request or a declaration offline),
``POST /v1/multihash/pay`` (payer: pay the parts not paid yet, with our return path),
``POST /v1/multihash/declare`` (payer: sign a refund declaration for a partly paid request),
``POST /v1/multihash/settle`` (payee: check a declaration and refund the parts it received).

Documents are JSON objects in the body, checked by their decoders (a DecodeError names the field,
as ``declaration.parts[1].preimage``: 400).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, integer, obj, string
from lightspeed.errors import DecodeError, PaymentError, UsageError
from lightspeed.multihash import (
    MAX_PARTS,
    SignedDeclaration,
    SignedRequest,
    decode_document,
    verify_declaration,
)

_DOC: Schema = {"type": "object", "description": "a signed document as `lightspeed multihash` prints it"}
_REQUEST: Schema = {"type": "object", "properties": {"request": {"type": "object"}, "signature": {"type": "string"},
                                                     "request_id": {"type": "string"}}}
_STATUS: Schema = {"type": "object", "properties": {
    "request_id": {"type": "string"}, "state": {"enum": ["open", "complete", "expired", "refunding", "refunded"]},
    "deliver": {"type": "boolean"}, "delivers": {"type": "string"}, "total_msat": {"type": "integer"},
    "paid_msat": {"type": "integer"}, "refunded_msat": {"type": "integer"}, "parts": {"type": "array"}}}


def _usage(exc: UsageError, default_field: str) -> ApiError:
    field, sep, reason = str(exc).partition(": ")
    return ApiError(400, reason, field) if sep and " " not in field else ApiError(400, str(exc), default_field)


def _request(body: Any) -> SignedRequest:
    document = decode_document(body["request"])
    if not isinstance(document, SignedRequest):
        raise DecodeError("request", "a declaration, not a request")
    return document


async def create(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    amounts = body["amounts_msat"]
    if not 1 <= len(amounts) <= MAX_PARTS:
        raise ApiError(400, f"expected 1 to {MAX_PARTS} amounts", "amounts_msat")
    for i, amount in enumerate(amounts):
        if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 2**53:
            raise ApiError(400, f"expected an amount from 1 to {2**53} msat", f"amounts_msat[{i}]")
    try:
        signed = ctx.node.multihash.create(amounts, body.get("delivers", ""), expiry=body.get("expiry_s", 3600))
    except UsageError as exc:
        raise _usage(exc, "amounts_msat") from None
    return 201, signed.to_json()


async def status(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    return 200, ctx.node.multihash.status(_request(body))


async def verify(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    document = decode_document(body["document"])
    if isinstance(document, SignedRequest):
        if not document.valid():
            raise DecodeError("signature", "not the payee node's signature over the request")
        r = document.request
        return 200, {"kind": "request", "valid": True, "request_id": document.request_id.hex(),
                     "payee_node_id": r.payee_node_id.hex(), "total_msat": r.total_msat, "parts": len(r.parts),
                     "delivers": r.delivers, "expires_at": r.expires_at}
    verify_declaration(document)
    d = document.declaration
    return 200, {"kind": "declaration", "valid": True, "request_id": d.request.request_id.hex(),
                 "payee_node_id": d.request.request.payee_node_id.hex(), "payer_key": d.payer_key.hex(),
                 "refund_msat": d.refund_msat, "succeeded": sum(o.succeeded for o in d.parts),
                 "failed": sum(not o.succeeded for o in d.parts)}


async def pay(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    signed = _request(body)
    try:
        paid = await ctx.node.multihash.pay(signed, timeout=body.get("timeout_s", 30),
                                            max_parts=body.get("max_parts", 1))
    except UsageError as exc:  # expired, our own, no peer to introduce a return path
        raise _usage(exc, "request") from None
    return 200, {"request_id": signed.request_id.hex(), "complete": all(p.status == "succeeded" for p in paid),
                 "parts": [p.to_json() for p in paid]}


async def declare(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    try:
        declared = ctx.node.multihash.declare(_request(body))
    except UsageError as exc:  # a part still pending; none or every part succeeded
        field, _, reason = str(exc).partition(": ")
        raise ApiError(409, reason, field) from None
    return 200, declared.to_json()


async def settle(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    document = decode_document(body["declaration"])
    if not isinstance(document, SignedDeclaration):
        raise DecodeError("declaration", "a request, not a declaration")
    try:
        return 200, await ctx.node.multihash.settle(document, timeout=body.get("timeout_s", 60))
    except (PaymentError, UsageError) as exc:
        raise ApiError(409, str(exc), "return_path") from None


def endpoints() -> tuple[Endpoint, ...]:
    request_body = {"request": {**_DOC, "description": "a signed multi-hash request (POST /v1/multihash)"}}
    return (
        Endpoint("POST", "/v1/multihash", "createMultihash",
                 "Create a multi-hash request: one invoice per amount, signed by the node key with what all the "
                 "parts buy (delivered only once every part is paid)", create, _REQUEST, status=201,
                 body=obj({"amounts_msat": {"type": "array", "description": f"1 to {MAX_PARTS} amounts in msat"},
                           "delivers": string("what is delivered when every part is paid", 0, max_utf8_bytes=639),
                           "expiry_s": integer("seconds the invoices and the request stay payable", 60, 30 * 86_400)},
                          ["amounts_msat"])),
        Endpoint("POST", "/v1/multihash/status", "multihashStatus",
                 "Where a request of ours stands: open, complete (deliver), expired, refunding or refunded",
                 status, _STATUS, body=obj(request_body, ["request"])),
        Endpoint("POST", "/v1/multihash/verify", "verifyMultihash",
                 "Check a multi-hash request or refund declaration: signatures, invoices, preimages, sums "
                 "(400 naming the field that does not hold)", verify,
                 {"type": "object", "properties": {"kind": {"enum": ["request", "declaration"]},
                                                   "valid": {"type": "boolean"}, "request_id": {"type": "string"}}},
                 body=obj({"document": _DOC}, ["document"])),
        Endpoint("POST", "/v1/multihash/pay", "payMultihash",
                 "Pay the parts of a multi-hash request not paid yet, one after the other, each with the same "
                 "blinded return path (its key signs a refund declaration later)", pay,
                 {"type": "object", "properties": {"request_id": {"type": "string"}, "complete": {"type": "boolean"},
                                                   "parts": {"type": "array"}}},
                 body=obj({**request_body,
                           "timeout_s": integer("how long to wait for each part", 1, 600),
                           "max_parts": integer("MPP shards per part (1: each part in one piece)", 1, 16)},
                          ["request"])),
        Endpoint("POST", "/v1/multihash/declare", "declareMultihash",
                 "Sign a refund declaration for a request we paid in part: the succeeded parts with their "
                 "preimages, the failed ones, a fresh return path (409 while a part is pending)", declare,
                 {"type": "object", "properties": {"declaration": {"type": "object"}, "signature": {"type": "string"}}},
                 body=obj(request_body, ["request"])),
        Endpoint("POST", "/v1/multihash/settle", "settleMultihash",
                 "Check a refund declaration for a request of ours, cancel its failed parts and refund its "
                 "succeeded ones through the declared return path (once: settling again pays nothing more)",
                 settle, _STATUS,
                 body=obj({"declaration": {**_DOC, "description": "a signed refund declaration"},
                           "timeout_s": integer("how long to wait for each refund part", 1, 600)},
                          ["declaration"])),
    )
