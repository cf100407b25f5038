"""The JSON form of an invoice (the ``lightspeed invoice decode`` contract) and back.

Besides the contract fields (see DESIGN.md) the JSON carries ``required_features`` (the even
feature bits by BOLT 9 name), ``hrp`` and
``tagged_fields`` (every field as ``{"tag", "data"}`` in wire order, data in
bech32 characters). :func:`unsigned_from_json` uses them as a layout: fields
whose value is unchanged are written back exactly as they were, unknown and
skipped fields stay where they were, and edited or new values are written
fresh. That is what makes decode -> JSON -> encode lossless.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

from lightspeed.bitcoin.address import address_to_script
from lightspeed.bitcoin.network import Network, network_by_name
from lightspeed.errors import DecodeError, UsageError
from lightspeed.invoice.amount import format_amount, parse_amount
from lightspeed.invoice.decode import SKIPPED, interpret_field, parse_hrp
from lightspeed.invoice.encode import build_invoice
from lightspeed.invoice.features import feature_name
from lightspeed.invoice.fields import (
    DEFAULT_EXPIRY,
    DEFAULT_MIN_FINAL_CLTV_EXPIRY,
    FALLBACK_P2PKH,
    FALLBACK_P2SH,
    KNOWN_TAGS,
    TAG_EXPIRY,
    TAG_FALLBACK,
    TAG_MIN_FINAL_CLTV_EXPIRY,
    TAG_PAYEE,
    TAG_ROUTE_HINT,
    Fallback,
    RouteHintHop,
    TaggedField,
    format_short_channel_id,
    parse_short_channel_id,
    tag_from_letter,
)
from lightspeed.invoice.model import Invoice, UnsignedInvoice

_MULTI_TAGS = (TAG_FALLBACK, TAG_ROUTE_HINT)


def invoice_to_json(invoice: Invoice) -> dict[str, Any]:
    """The decode contract: hex for bytes, null for absent values, [] for empty lists."""
    return {
        "network": invoice.network.name,
        "amount_msat": invoice.amount_msat,
        "timestamp": invoice.timestamp,
        "payment_hash": invoice.payment_hash.hex(),
        "payment_secret": _hex(invoice.payment_secret),
        "description": invoice.description,
        "description_hash": _hex(invoice.description_hash),
        "expiry": invoice.expiry,
        "min_final_cltv_expiry": invoice.min_final_cltv_expiry,
        "features": sorted(invoice.features),
        # the even (required) bits by BOLT 9 name: what a payer must support to pay it
        "required_features": [feature_name(b) for b in sorted(invoice.features) if b % 2 == 0],
        "payee": invoice.payee.hex(),
        "fallback_addresses": invoice.fallback_addresses,
        "route_hints": [[_hop_to_json(hop) for hop in route] for route in invoice.route_hints],
        "metadata": _hex(invoice.metadata),
        "signature": invoice.signature.hex(),
        "recovery_id": invoice.recovery_id,
        "hrp": invoice.hrp,
        "tagged_fields": [{"tag": f.letter, "data": f.data} for f in invoice.tagged_fields],
    }


def unsigned_from_json(obj: Any) -> UnsignedInvoice:
    """An unsigned invoice from decode-contract JSON; raises DecodeError naming the bad key."""
    if not isinstance(obj, dict):
        raise DecodeError("json", "expected a JSON object")
    network = _network(obj)
    amount_msat = _opt_int(obj, "amount_msat")
    layout = _layout(obj)
    layout_tags = _readable_tags(layout or [])
    expiry = _opt_int(obj, "expiry")
    cltv = _opt_int(obj, "min_final_cltv_expiry")
    payee = _opt_hex(obj, "payee", 33)
    try:
        fresh = _build_from_json(obj, network, amount_msat, layout_tags, expiry, cltv, payee)
    except UsageError as exc:
        raise DecodeError("json", str(exc)) from None
    fields = fresh.tagged_fields if layout is None else _merge(layout, fresh.tagged_fields)
    hrp = fresh.hrp
    original_hrp = obj.get("hrp")
    if isinstance(original_hrp, str):
        try:
            if parse_hrp(original_hrp) == (network, amount_msat):
                hrp = original_hrp  # same meaning; keep its exact spelling (e.g. "2500000u")
        except DecodeError:
            pass
    return UnsignedInvoice(network, hrp, fresh.timestamp, fields)


def _build_from_json(
    obj: dict[str, Any], network: Network, amount_msat: int | None, layout_tags: set[int],
    expiry: int | None, cltv: int | None, payee: bytes | None,
) -> UnsignedInvoice:
    return build_invoice(
        network=network,
        amount_msat=amount_msat,
        timestamp=_int(obj, "timestamp"),
        payment_hash=_hex_bytes(obj, "payment_hash", 32),
        payment_secret=_hex_bytes(obj, "payment_secret", 32),
        description=_opt_str(obj, "description"),
        description_hash=_opt_hex(obj, "description_hash", 32),
        # Defaults are written only if the original carried the field explicitly.
        expiry=None if expiry in (None, DEFAULT_EXPIRY) and TAG_EXPIRY not in layout_tags else expiry,
        min_final_cltv_expiry=(
            None if cltv in (None, DEFAULT_MIN_FINAL_CLTV_EXPIRY)
            and TAG_MIN_FINAL_CLTV_EXPIRY not in layout_tags else cltv
        ),
        features=_features(obj),
        payee=payee if TAG_PAYEE in layout_tags else None,
        fallbacks=[_fallback_from_address(a, network) for a in _list(obj, "fallback_addresses")],
        route_hints=[_route_from_json(r, i) for i, r in enumerate(_list(obj, "route_hints"))],
        metadata=_opt_hex(obj, "metadata"),
    )


def _merge(layout: list[TaggedField], fresh: tuple[TaggedField, ...]) -> tuple[TaggedField, ...]:
    """Place fresh fields into the original layout (see the module docstring)."""
    pending: dict[int, deque[TaggedField]] = defaultdict(deque)
    for f in fresh:
        pending[f.tag].append(f)
    used_single: set[int] = set()
    out: list[TaggedField] = []
    for raw in layout:
        tag = raw.tag
        try:
            raw_value = interpret_field(raw) if tag in KNOWN_TAGS else SKIPPED
        except DecodeError:
            raw_value = SKIPPED
        readable = raw_value is not SKIPPED and (tag in _MULTI_TAGS or tag not in used_single)
        if not readable:
            out.append(raw)  # a field every reader ignores: keep it where it was
            continue
        used_single.add(tag)
        if pending[tag]:
            new = pending[tag].popleft()
            out.append(raw if interpret_field(new) == raw_value else new)
        # else: the value was removed from the JSON, so the field goes too
    for f in fresh:  # values the original did not have, in the fresh order
        if f in pending[f.tag]:
            out.append(f)
    return tuple(out)


def _readable_tags(layout: list[TaggedField]) -> set[int]:
    """Tags of the layout's fields that a reader would use (not skipped, not invalid)."""
    tags = set()
    for f in layout:
        try:
            if f.tag in KNOWN_TAGS and interpret_field(f) is not SKIPPED:
                tags.add(f.tag)
        except DecodeError:
            pass
    return tags


def _network(obj: dict[str, Any]) -> Network:
    name = obj.get("network")
    if not isinstance(name, str):
        raise DecodeError("network", "missing or not a string")
    return network_by_name(name)


def _layout(obj: dict[str, Any]) -> list[TaggedField] | None:
    raw = obj.get("tagged_fields")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise DecodeError("tagged_fields", "must be a list")
    fields = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("tag"), str) or not isinstance(entry.get("data"), str):
            raise DecodeError(f"tagged_fields[{i}]", "must be an object with string 'tag' and 'data'")
        try:
            tag = tag_from_letter(entry["tag"])
        except ValueError as exc:
            raise DecodeError(f"tagged_fields[{i}].tag", str(exc)) from None
        data = entry["data"]
        if any(c not in "qpzry9x8gf2tvdw0s3jn54khce6mua7l" for c in data) or len(data) > 1023:
            raise DecodeError(f"tagged_fields[{i}].data", "must be at most 1023 bech32 characters")
        fields.append(TaggedField(tag, data))
    return fields


def _features(obj: dict[str, Any]) -> list[int]:
    bits = _list(obj, "features")
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 5 * 1023 for b in bits):
        raise DecodeError("features", "must be a list of feature bit numbers")
    return bits


def _fallback_from_address(address: Any, network: Network) -> Fallback:
    if not isinstance(address, str):
        raise DecodeError("fallback_addresses", "entries must be address strings")
    try:
        script = address_to_script(address, network)
    except DecodeError as exc:
        raise DecodeError("fallback_addresses", f"{address!r}: {exc.reason}") from None
    if script[0] == 0x76:  # OP_DUP ... P2PKH
        return Fallback(FALLBACK_P2PKH, script[3:23])
    if script[0] == 0xA9:  # OP_HASH160 ... P2SH
        return Fallback(FALLBACK_P2SH, script[2:22])
    version = 0 if script[0] == 0 else script[0] - 0x50
    return Fallback(version, script[2:])


def _route_from_json(route: Any, index: int) -> list[RouteHintHop]:
    where = f"route_hints[{index}]"
    if not isinstance(route, list) or not route:
        raise DecodeError(where, "must be a non-empty list of hops")
    hops = []
    for j, hop in enumerate(route):
        at = f"{where}[{j}]"
        if not isinstance(hop, dict):
            raise DecodeError(at, "must be an object")
        scid_text = hop.get("short_channel_id")
        try:
            scid = parse_short_channel_id(scid_text) if isinstance(scid_text, str) else -1
        except ValueError as exc:
            raise DecodeError(f"{at}.short_channel_id", str(exc)) from None
        if scid < 0:
            raise DecodeError(f"{at}.short_channel_id", "must be a BLOCKxTXxOUT string")
        hops.append(RouteHintHop(
            pubkey=_hex_bytes(hop, "pubkey", 33, at),
            short_channel_id=scid,
            fee_base_msat=_int(hop, "fee_base_msat", at, bits=32),
            fee_proportional_millionths=_int(hop, "fee_proportional_millionths", at, bits=32),
            cltv_expiry_delta=_int(hop, "cltv_expiry_delta", at, bits=16),
        ))
    return hops


def _hop_to_json(hop: RouteHintHop) -> dict[str, Any]:
    return {
        "pubkey": hop.pubkey.hex(),
        "short_channel_id": format_short_channel_id(hop.short_channel_id),
        "fee_base_msat": hop.fee_base_msat,
        "fee_proportional_millionths": hop.fee_proportional_millionths,
        "cltv_expiry_delta": hop.cltv_expiry_delta,
    }


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _int(obj: dict[str, Any], key: str, where: str = "", bits: int = 64) -> int:
    value = obj.get(key)
    name = f"{where}.{key}" if where else key
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(name, "missing or not an integer")
    if not 0 <= value < 1 << bits:
        raise DecodeError(name, f"must be between 0 and 2^{bits}-1")
    return value


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key)


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DecodeError(key, "must be a string or null")
    return value


def _hex_bytes(obj: dict[str, Any], key: str, length: int | None = None, where: str = "") -> bytes:
    name = f"{where}.{key}" if where else key
    value = obj.get(key)
    if not isinstance(value, str):
        raise DecodeError(name, "missing or not a hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise DecodeError(name, "is not valid hex") from None
    if length is not None and len(data) != length:
        raise DecodeError(name, f"must be {length} bytes, got {len(data)}")
    return data


def _opt_hex(obj: dict[str, Any], key: str, length: int | None = None) -> bytes | None:
    return None if obj.get(key) is None else _hex_bytes(obj, key, length)


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(key, "must be a list")
    return value


__all__ = ["format_amount", "invoice_to_json", "parse_amount", "unsigned_from_json"]
