"""The stream protocol's messages: one JSON object per WebSocket text frame, ``type`` first.

Buyer to seller: ``buy {anchor, ticks, batch_ticks}``, ``open {allowance_id[, resume_key]}``,
``resume {stream_id, signature}``, ``pay {index, link}``, ``close {}``; without an allowance
``buy_increments {ticks_per_payment, ticks[, resume_key]}`` and ``paid {payment_hash}``. Seller to
buyer: ``tariff {stream_id, node_id, tariff[, sellers]}``,
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
MAX_SELLERS = 8  # seller processes one tariff may announce

# type -> {field: kind}; kinds: "hexN" (N bytes), "uint", "str", "object", "sellers" (a list of
# {url, node_id}: the seller's processes); "?" before a kind: the field may be absent (or null)
SCHEMAS: dict[str, dict[str, str]] = {
    "buy": {"anchor": "hex32", "ticks": "uint", "batch_ticks": "uint"},
    "buy_increments": {"ticks_per_payment": "uint", "ticks": "uint", "resume_key": "?hex32"},
    "paid": {"payment_hash": "hex32"},
    "open": {"allowance_id": "hex16", "resume_key": "?hex32"},
    "resume": {"stream_id": "hex16", "signature": "?hex64"},
    "pay": {"index": "uint", "link": "hex32"},
    "close": {},
    "tariff": {"stream_id": "hex16", "node_id": "hex33", "tariff": "object", "sellers": "?sellers"},
    "invoice": {"allowance_id": "hex16", "invoice": "str", "ticks": "uint"},
    "position": {"stream_id": "hex16", "start_index": "uint", "start_link": "hex32", "last_index": "uint",
                 "delivered_units": "uint", "increments": "uint"},
    "delivered": {"units": "uint", "total_units": "uint"},
    "statement": {"statement": "object", "signature": "hex64"},
    "error": {"code": "str", "reason": "str"},
}


_HEX_SIZES = {spec.lstrip("?"): int(spec.lstrip("?")[3:]) for fields in SCHEMAS.values()
              for spec in fields.values() if spec.lstrip("?").startswith("hex")}


def _hex(value: object, size: int) -> bytes | None:
    """``size`` bytes from exactly ``2 * size`` hex digits, else None. ``bytes.fromhex`` skips
    whitespace: a string of the right length that decodes to ``size`` bytes had none (this is
    the per-tick path: no regular expression)."""
    if not isinstance(value, str) or len(value) != 2 * size:
        return None
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        return None
    return decoded if len(decoded) == size else None


def encode_delivered(units: int, total_units: int) -> str:
    """``delivered {units, total_units}``, the seller's frame of every tick, without ``json.dumps``
    (two integers: the same text :func:`encode` makes)."""
    return f'{{"type":"delivered","units":{int(units)},"total_units":{int(total_units)}}}'


def encode_pay(index: int, link: bytes) -> str:
    """``pay {index, link}``, the buyer's frame of every tick (the same text :func:`encode` makes)."""
    return f'{{"type":"pay","index":{int(index)},"link":"{link.hex()}"}}'


def encode(kind: str, **fields: object) -> str:
    """A frame: bytes become hex; the schema is the same one :func:`parse` checks."""
    assert kind in SCHEMAS, kind
    body: dict[str, object] = {"type": kind}
    for name, value in fields.items():
        if name == "sellers" and isinstance(value, list):
            value = [{"url": url, "node_id": node_id.hex()} for url, node_id in value]
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
    if kind == "pay":  # every tick's frames: their two fields checked without the schema's loop
        link = _hex(data.get("link"), 32)
        if link is None:
            raise DecodeError("pay.link", "expected 32 bytes as 64 hex digits")
        return {"type": kind, "index": _uint(data.get("index"), "pay.index"), "link": link}
    if kind == "delivered":
        return {"type": kind, "units": _uint(data.get("units"), "delivered.units"),
                "total_units": _uint(data.get("total_units"), "delivered.total_units")}
    out: dict[str, Any] = {"type": kind}
    for name, spec in SCHEMAS[kind].items():
        value = data.get(name)
        if spec.startswith("?"):
            if value is None:
                continue
            spec = spec[1:]
        if spec == "sellers":
            out[name] = _sellers(f"{kind}.{name}", value)
        elif spec.startswith("hex"):
            size = _HEX_SIZES[spec]
            decoded = _hex(value, size)
            if decoded is None:
                raise DecodeError(f"{kind}.{name}", f"expected {size} bytes as {2 * size} hex digits")
            out[name] = decoded
        elif spec == "uint":
            out[name] = _uint(value, f"{kind}.{name}")
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


def _uint(value: object, field: str) -> int:
    if type(value) is not int or not 0 <= value <= _U64:  # not a bool (a subclass of int)
        raise DecodeError(field, "expected an integer from 0 to 2^64-1")
    return value


def _sellers(field: str, value: object) -> list[tuple[str, bytes]]:
    """``[{url, node_id}, ...]`` (at most 8, ws:// or wss:// URLs) as ``(url, node_id)`` pairs."""
    if not isinstance(value, list) or len(value) > MAX_SELLERS:
        raise DecodeError(field, f"expected a list of at most {MAX_SELLERS} {{url, node_id}} objects")
    out = []
    for i, item in enumerate(value):
        url = item.get("url") if isinstance(item, dict) else None
        node_id = item.get("node_id") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")) or len(url) > 256:
            raise DecodeError(f"{field}[{i}].url", "expected a ws:// or wss:// URL of at most 256 characters")
        if not isinstance(node_id, str) or len(node_id) != 66 or not _HEX.fullmatch(node_id):
            raise DecodeError(f"{field}[{i}].node_id", "expected 33 bytes as 66 hex digits")
        out.append((url, bytes.fromhex(node_id)))
    return out
