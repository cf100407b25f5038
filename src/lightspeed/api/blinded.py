"""REST endpoints for blinded payment paths (BOLT 4 route blinding), until offers carry them.

BOLT 11 cannot carry a blinded path, so these two routes are how a daemon hands its paths to a
payer and pays to someone else's: ``POST /v1/blinded-paths`` (a payment we receive only over the
returned paths) and ``POST /v1/blinded-payments`` (pay to a list of them). A path and its
payinfo travel as hex of their BOLT 12 encodings (``blinded_path``, ``blinded_payinfo``), exactly
as an ``invoice_paths`` / ``invoice_blindedpay`` entry. The offers flow will build on the same
node calls (``Node.blinded_payment_paths``, ``Node.pay_blinded``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError, _refused
from lightspeed.api.ledger import sent_json
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, hex_string, integer, obj, string
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.offers.tlv_fields import BlindedPayInfo, read_blindedpay
from lightspeed.onion.blinding import BlindedPath

MAX_PATHS = 16
MAX_VIA_NODES = 8

_PATH: Schema = {"type": "object", "properties": {
    "path": {"type": "string", "description": "a BOLT 12 blinded_path, hex"},
    "payinfo": {"type": "string", "description": "its BOLT 12 blinded_payinfo, hex"}}}
_PATHS: Schema = {"type": "array", "description": f"1 to {MAX_PATHS} objects {{path, payinfo}} (hex)"}
BLINDED_REQUEST: Schema = {"type": "object", "properties": {
    "payment_hash": {"type": "string"}, "amount_msat": {"type": ["integer", "null"]},
    "expires_at": {"type": "integer"}, "paths": {"type": "array", "items": _PATH}}}


def _paths(value: Any) -> list[tuple[BlindedPath, BlindedPayInfo]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PATHS:
        raise DecodeError("paths", f"must be a list of 1 to {MAX_PATHS} {{path, payinfo}} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) \
                or not isinstance(item.get("payinfo"), str):
            raise DecodeError(f"paths[{i}]", "must be an object with hex strings path and payinfo")
        try:
            raw_path, raw_info = bytes.fromhex(item["path"]), bytes.fromhex(item["payinfo"])
        except ValueError:
            raise DecodeError(f"paths[{i}]", "path and payinfo must be hex") from None
        try:
            path = BlindedPath.from_bytes(raw_path)
        except DecodeError as exc:
            raise DecodeError(f"paths[{i}].path", f"{exc.field}: {exc.reason}") from None
        infos = read_blindedpay(raw_info, f"paths[{i}].payinfo")
        if len(infos) != 1:
            raise DecodeError(f"paths[{i}].payinfo", "must hold exactly one blinded_payinfo")
        if not infos[0].usable:
            raise DecodeError(f"paths[{i}].payinfo", "requires a feature this node does not know (even bit)")
        out.append((path, infos[0]))
    return out


def _via(value: Any) -> list[list[bytes]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_PATHS:
        raise DecodeError("via", f"must be a list of 1 to {MAX_PATHS} node lists")
    out = []
    for i, nodes in enumerate(value):
        if not isinstance(nodes, list) or not 1 <= len(nodes) <= MAX_VIA_NODES:
            raise DecodeError(f"via[{i}]", f"must be a list of 1 to {MAX_VIA_NODES} node ids")
        try:
            ids = [bytes.fromhex(n) for n in nodes]
        except (TypeError, ValueError):
            raise DecodeError(f"via[{i}]", "node ids must be hex") from None
        if any(len(n) != 33 for n in ids):
            raise DecodeError(f"via[{i}]", "node ids are 33 bytes")
        out.append(ids)
    return out


async def create_blinded_paths(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    try:
        made = ctx.node.blinded_payment_paths(body.get("amount_msat"), body.get("description", ""),
                                              body.get("expiry", 3600), _via(body.get("via")),
                                              body.get("dummy_hops", 1))
    except UsageError as exc:
        raise _refused(exc, "via") from None
    return 201, {"payment_hash": made.payment_hash.hex(), "amount_msat": made.amount_msat,
                 "expires_at": made.expires_at,
                 "paths": [{"path": p.to_bytes().hex(), "payinfo": i.to_bytes().hex()} for p, i in made.paths]}


async def pay_blinded(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    paths = _paths(body["paths"])
    payment_hash = bytes.fromhex(body["payment_hash"])
    earlier = node.store.payment(payment_hash)
    if earlier is not None and earlier.status != "failed":
        raise ApiError(409, f"this payment is already {'paid' if earlier.status == 'succeeded' else 'being paid'}",
                       "payment_hash")
    ctx.times.started[payment_hash] = ctx.now()
    timeout_s = body.get("timeout_s", 60)
    try:
        await node.pay_blinded(paths, body["amount_msat"], payment_hash, timeout=timeout_s)
    except (LightspeedError, TimeoutError) as exc:
        record = node.store.payment(payment_hash)
        if record is not None and record.status == "pending":
            raise ApiError(504, f"the payment is still pending after {timeout_s} s; it will end settled or failed: "
                                f"look it up by payment_hash {payment_hash.hex()} in GET /v1/payments",
                           details={"payment_hash": payment_hash.hex()}) from None
        ctx.times.settled.setdefault(payment_hash, ctx.now())
        if isinstance(exc, (PaymentError, UsageError)):
            raise ApiError(409, str(exc), "paths") from None
        raise
    ctx.times.settled.setdefault(payment_hash, ctx.now())
    record = node.store.payment(payment_hash)
    assert record is not None  # pay_blinded stored it
    return 200, sent_json(record, ctx.times)


def endpoints(payment: Schema) -> tuple[Endpoint, ...]:
    return (
        Endpoint("POST", "/v1/blinded-paths", "createBlindedPaths",
                 "A payment to this node, payable only over the returned blinded paths (BOLT 4 route blinding): "
                 "one path per peer, or through the given introduction nodes",
                 create_blinded_paths, BLINDED_REQUEST, status=201,
                 body=obj({"amount_msat": integer("amount to receive", 1, 2**53),
                           "description": string("what the payment is for", max_length=639),
                           "expiry": integer("seconds until the payment expires", 1, 31_536_000),
                           "via": {"type": "array", "description": "node lists, introduction node first, each "
                                                                   "ending at a peer of this node (hex node ids)"},
                           "dummy_hops": integer("dummy hops added to each path", 0, 10)}, ["amount_msat"])),
        Endpoint("POST", "/v1/blinded-payments", "payBlinded",
                 "Pay over blinded paths (MPP across them, another path after a failure); returns once it settled",
                 pay_blinded, payment,
                 body=obj({"paths": _PATHS, "amount_msat": integer("amount to pay", 1, 2**53),
                           "payment_hash": hex_string(32, "the payment hash: 32 bytes in hex"),
                           "timeout_s": integer("give up waiting after this many seconds", 1, 600)},
                          ["paths", "amount_msat", "payment_hash"])),
    )
