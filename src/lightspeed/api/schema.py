"""Request bodies checked against the same JSON Schemas the OpenAPI document publishes.

One schema per endpoint is the single source of truth: the validator below
enforces it and :mod:`lightspeed.api.openapi` prints it, so the document cannot
drift from what the server accepts. Only the keywords the API uses are
supported (type, properties, required, additionalProperties, minimum, maximum,
minLength, pattern); anything else in a schema is a programming error.
"""

from __future__ import annotations

import re
from typing import Any

from lightspeed.errors import DecodeError

Schema = dict[str, Any]

_SUPPORTED = {"type", "properties", "required", "additionalProperties", "minimum", "maximum", "minLength",
              "pattern", "description", "default", "examples"}
_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "string": (str,), "integer": (int,),
                                       "boolean": (bool,), "array": (list,)}


def hex_string(length: int, description: str) -> Schema:
    return {"type": "string", "pattern": f"^[0-9a-fA-F]{{{2 * length}}}$", "description": description}


def integer(description: str, minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def string(description: str) -> Schema:
    return {"type": "string", "description": description}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


def validate(value: Any, schema: Schema, path: str = "") -> None:
    """Raise DecodeError(field, reason) at the first place ``value`` breaks ``schema``."""
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise AssertionError(f"unsupported schema keywords {sorted(unknown)}")
    field = path or "body"
    kind = schema.get("type")
    if kind is not None:
        expected = _TYPES[kind]
        # JSON has no separate booleans-as-integers: True is not an amount.
        if not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool)):
            raise DecodeError(field, f"must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise DecodeError(field, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise DecodeError(field, f"must be at most {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise DecodeError(field, f"must have at least {schema['minLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise DecodeError(field, schema.get("description", f"must match {schema['pattern']}"))
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise DecodeError(name if not path else f"{path}.{name}", "is required")
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in properties:
                    raise DecodeError(name if not path else f"{path}.{name}", "is not a known field")
        for name, sub in properties.items():
            if name in value:
                validate(value[name], sub, name if not path else f"{path}.{name}")
