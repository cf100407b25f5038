"""The stream protocol's messages: one JSON object per WebSocket text frame, ``type`` first.

Buyer to seller: ``buy {anchor, ticks, batch_ticks}``, ``open {allowance_id}``, ``resume {stream_id}``,
``pay {index, link}``, ``close {}``; without an allowance ``buy_increments {ticks_per_payment, ticks}`` and
``paid {payment_hash}``. Seller to buyer: ``tariff {stream_id, node_id, tariff}``,
``invoice {allowance_id, invoice, ticks}``, ``position {stream_id, start_index, start_link,
last_index, delivered_units, increments}``, ``delivered {units, total_units}``, ``statement {statement,
signature}``, ``error {code, reason[, invoice]}``.

:func:`parse` turns a frame into a ``dict`` whose fields have been checked (types, sizes,
ranges) or raises :class:`~lightspeed.errors.DecodeError` naming the field: a peer's bad
frame becomes an ``error`` message, never a traceback.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lightspeed.errors import DecodeError

MAX_FRAME = 16 * 1024  # the longest frame either side accepts, in characters (a statement is ~1 KB)
_HEX = re.compile(r"[0-9a-fA-F]*")
_U64 = 2**64 - 1

# type -> {field: kind}; kinds: "hexN" (N bytes), "uint", "str", "object", "invoice"
SCHEMAS: dict[str, dict[str, str]] = {
    "buy": {"anchor": "hex32", "ticks": "uint", "batch_ticks": "uint"},
    "buy_increments": {"ticks_per_payment": "uint", "ticks": "uint"},
    "paid": {"payment_hash": "hex32"},
    "open": {"allowance_id": "hex16"},
    "resume": {"stream_id": "hex16"},
    "pay": {"index": "uint", "link": "hex32"},
    "close": {},
    "tariff": {"stream_id": "hex16", "node_id": "hex33", "tariff": "object"},
    "invoice": {"allowance_id": "hex16", "invoice": "str", "ticks": "uint"},
    "position": {"stream_id": "hex16", "start_index": "uint", "start_link": "hex32", "last_index": "uint",
                 "delivered_units": "uint", "increments": "uint"},
    "delivered": {"units": "uint", "total_units": "uint"},
    "statement": {"statement": "object", "signature": "hex64"},
    "error": {"code": "str", "reason": "str"},
}


def encode(kind: str, **fields: object) -> str:
    """A frame: bytes become hex; the schema is the same one :func:`parse` checks."""
    assert kind in SCHEMAS, kind
    body: dict[str, object] = {"type": kind}
    for name, value in fields.items():
        body[name] = value.hex() if isinstance(value, bytes) else value
    return json.dumps(body, separators=(",", ":"))


def parse(frame: str | bytes, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """Decode and check one frame; hex fields come back as ``bytes``."""
    if len(frame) > MAX_FRAME:
        raise DecodeError("frame", f"longer than {MAX_FRAME} characters")
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise DecodeError("frame", "not JSON") from None
    if not isinstance(data, dict):
        raise DecodeError("frame", "expected a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS or (allowed is not None and kind not in allowed):
        expected = sorted(allowed if allowed is not None else SCHEMAS)
        raise DecodeError("type", f"expected one of {', '.join(expected)}")
    out: dict[str, Any] = {"type": kind}
    for name, spec in SCHEMAS[kind].items():
        value = data.get(name)
        if spec.startswith("hex"):
            size = int(spec[3:])
            if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
                raise DecodeError(f"{kind}.{name}", f"expected {size} bytes as {2 * size} hex digits")
            out[name] = bytes.fromhex(value)
        elif spec == "uint":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64:
                raise DecodeError(f"{kind}.{name}", "expected an integer from 0 to 2^64-1")
            out[name] = value
        elif spec == "str":
            if not isinstance(value, str) or len(value) > 4096:
                raise DecodeError(f"{kind}.{name}", "expected a string of at most 4096 characters")
            out[name] = value
        else:
            if not isinstance(value, dict):
                raise DecodeError(f"{kind}.{name}", "expected a JSON object")
            out[name] = value
    if kind == "error" and isinstance(data.get("invoice"), str):
        out["invoice"] = data["invoice"][:4096]
    return out
