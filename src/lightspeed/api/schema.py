"""REST inputs checked against the same JSON Schemas the OpenAPI document publishes.

One schema per input (request body, path parameter, query parameter) is the
single source of truth: :func:`validate` enforces it and
:mod:`lightspeed.api.openapi` prints it, so the document cannot drift from what
the server accepts. Every refusal is a :class:`DecodeError` naming the field,
never an exception from deeper down (a lone surrogate reaching an encoder, a
host the resolver chokes on, a point that is not on the curve).

Only the keywords the API uses are supported; anything else in a schema is a
programming error. Beyond JSON Schema's own: ``pattern`` must match the whole
string (``re.fullmatch``: a trailing newline does not pass), every string must
be encodable as UTF-8, ``format`` names one of :data:`FORMATS`, and
``x-maxUtf8Bytes`` bounds the UTF-8 length (what BOLT 11 fields are measured in).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from lightspeed.crypto.secp256k1 import is_valid_pubkey
from lightspeed.errors import DecodeError

Schema = dict[str, Any]

_SUPPORTED = {"type", "properties", "required", "additionalProperties", "minimum", "maximum", "minLength",
              "maxLength", "pattern", "enum", "format", "x-maxUtf8Bytes", "description", "default", "examples"}
_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "string": (str,), "integer": (int,),
                                       "boolean": (bool,), "array": (list,)}
MAX_HOST_LENGTH = 253  # RFC 1035: a name is at most 255 octets on the wire, 253 characters written out
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # RFC 1123 labels (plus _, as seen in SRV-style names)


def _secp256k1_point(text: str) -> str | None:
    # The pattern already made it 66 hex digits; the prefix and the curve equation remain.
    return None if is_valid_pubkey(bytes.fromhex(text)) else "is not a valid secp256k1 point (compressed)"


def _host(text: str) -> str | None:
    if len(text) > MAX_HOST_LENGTH:
        return f"must have at most {MAX_HOST_LENGTH} characters"
    if any(not c.isprintable() for c in text):
        return "must not contain control characters"
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    labels = text.removesuffix(".").split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "must be an IP address or a DNS name (labels of 1-63 letters, digits or hyphens)"
    return None


FORMATS: dict[str, Callable[[str], str | None]] = {"secp256k1-point": _secp256k1_point, "host": _host}


def hex_string(length: int, description: str) -> Schema:
    return {"type": "string", "pattern": f"^[0-9a-fA-F]{{{2 * length}}}$", "description": description}


def node_id(description: str) -> Schema:
    return {**hex_string(33, description), "format": "secp256k1-point"}


def host(description: str) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": MAX_HOST_LENGTH, "format": "host",
            "description": description}


def integer(description: str, minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def string(description: str, min_length: int = 0, max_length: int | None = None,
           max_utf8_bytes: int | None = None) -> Schema:
    schema: Schema = {"type": "string", "description": description}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if max_utf8_bytes is not None:
        schema["x-maxUtf8Bytes"] = max_utf8_bytes
    return schema


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


def field_name(name: str) -> str:
    """A client-chosen name as it may appear in an error: short, printable, encodable."""
    if 0 < len(name) <= 64 and name.isprintable() and _encodable(name):
        return name
    return ascii(name[:64])


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def validate(value: Any, schema: Schema, path: str = "") -> None:
    """Raise DecodeError(field, reason) at the first place ``value`` breaks ``schema``."""
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise AssertionError(f"unsupported schema keywords {sorted(unknown)}")
    field = path or "body"
    kind: str | None = schema.get("type")
    # JSON has no separate booleans-as-integers: True is not an amount.
    if kind is not None and (not isinstance(value, _TYPES[kind]) or (kind == "integer" and isinstance(value, bool))):
        raise DecodeError(field, f"must be {_article(kind)} {kind}")
    if "enum" in schema and not any(type(value) is type(v) and value == v for v in schema["enum"]):
        raise DecodeError(field, "must be one of " + ", ".join(str(v) for v in schema["enum"]))
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise DecodeError(field, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise DecodeError(field, f"must be at most {schema['maximum']}")
    if isinstance(value, str):
        _validate_string(value, schema, field)
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        prefix = f"{path}." if path else ""
        for name in schema.get("required", []):
            if name not in value:
                raise DecodeError(prefix + name, "is required")
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in properties:
                    raise DecodeError(prefix + field_name(name), "is not a known field")
        for name, sub in properties.items():
            if name in value:
                validate(value[name], sub, prefix + name)


def _validate_string(value: str, schema: Schema, field: str) -> None:
    if not _encodable(value):
        raise DecodeError(field, "is not valid Unicode (it contains a lone surrogate)")
    if len(value) < schema.get("minLength", 0):
        raise DecodeError(field, f"must have at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise DecodeError(field, f"must have at most {schema['maxLength']} characters")
    if "x-maxUtf8Bytes" in schema and len(value.encode()) > schema["x-maxUtf8Bytes"]:
        raise DecodeError(field, f"must be at most {schema['x-maxUtf8Bytes']} bytes in UTF-8")
    # fullmatch, not search: with search, "^...$" also accepts a trailing newline.
    if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
        raise DecodeError(field, schema.get("description", f"must match {schema['pattern']}"))
    if "format" in schema:
        problem = FORMATS[schema["format"]](value)
        if problem is not None:
            raise DecodeError(field, problem)
