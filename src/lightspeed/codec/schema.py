"""Wire message schemas as data: the CSV lines the BOLTs' own extraction tool produces.

``schemas/boltNN.csv`` are generated from the spec text by ``tools/extract-formats.py``
of lightning/bolts (the commit is noted in each file), so every message, TLV
stream and subtype here is exactly as the spec describes it. One generic codec
(:mod:`lightspeed.codec.wire`) reads and writes them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

# Field types with a fixed size in bytes.
FIXED_SIZES = {
    "byte": 1, "u8": 1, "u16": 2, "u32": 4, "u64": 8, "s64": 8,
    "point": 33, "signature": 64, "sha256": 32, "channel_id": 32, "chain_hash": 32,
    "short_channel_id": 8, "secret": 32, "point32": 32, "bip340sig": 64,
}
INTEGER_TYPES = {"u8", "u16", "u32", "u64", "s64", "tu16", "tu32", "tu64", "bigsize"}
TRUNCATED_MAX = {"tu16": 2, "tu32": 4, "tu64": 8}


@dataclass(frozen=True)
class FieldSpec:
    """One field: its type and how many (None: one; int: fixed; str: an earlier field; "...": the rest)."""

    name: str
    type: str
    count: int | str | None = None


@dataclass
class RecordSpec:
    """A message, a subtype, or one record of a TLV stream."""

    name: str
    number: int | None
    fields: list[FieldSpec] = field(default_factory=list)
    tlv_stream: str | None = None  # a message ending in a TLV stream names it here

    @property
    def length_fields(self) -> set[str]:
        """Fields that only carry the length of a later field (derived on encode)."""
        return {f.count for f in self.fields if isinstance(f.count, str) and f.count != "..."}


FAILURE_FLAGS = {"BADONION": 0x8000, "PERM": 0x4000, "NODE": 0x2000, "UPDATE": 0x1000}


def _message_number(text: str) -> tuple[int, bool]:
    """(number, is a BOLT 4 failure code such as ``PERM|NODE|2``)."""
    if text.isdigit():
        return int(text), False
    value = 0
    for part in text.split("|"):
        value |= FAILURE_FLAGS[part] if part in FAILURE_FLAGS else int(part)
    return value, True


@dataclass
class Schema:
    messages: dict[str, RecordSpec] = field(default_factory=dict)
    messages_by_type: dict[int, RecordSpec] = field(default_factory=dict)
    failures_by_code: dict[int, RecordSpec] = field(default_factory=dict)
    tlv_streams: dict[str, dict[int, RecordSpec]] = field(default_factory=dict)
    subtypes: dict[str, RecordSpec] = field(default_factory=dict)


def _count(text: str) -> int | str | None:
    if text == "":
        return None
    if text.isdigit():
        return int(text)
    return text


def parse_csv(lines: list[str], schema: Schema, onion_failures: bool = False) -> None:
    """Add the CSV lines (msgtype/msgdata/tlvtype/tlvdata/subtype/subtypedata) to ``schema``.

    BOLT 4's CSV mixes onion failure messages (codes such as ``PERM|15`` or a bare
    ``18``) with the ``onion_message`` wire message (513); with ``onion_failures``
    a msgtype below 256 or with flags is a failure code, not a wire message.
    """
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        kind = parts[0]
        if kind == "msgtype":
            number, is_failure = _message_number(parts[2])
            is_failure = is_failure or (onion_failures and number < 256)
            spec = RecordSpec(parts[1], number)
            schema.messages[spec.name] = spec
            if is_failure:  # BOLT 4 onion failure messages share the CSV format, not the namespace
                schema.failures_by_code[number] = spec
            else:
                schema.messages_by_type[number] = spec
        elif kind == "msgdata":
            message = schema.messages[parts[1]]
            name, typename, count = parts[2], parts[3], _count(parts[4] if len(parts) > 4 else "")
            if name == "tlvs" and count is None:
                message.tlv_stream = typename
            else:
                message.fields.append(FieldSpec(name, typename, count))
        elif kind == "tlvtype":
            stream = schema.tlv_streams.setdefault(parts[1], {})
            stream[int(parts[3])] = RecordSpec(parts[2], int(parts[3]))
        elif kind == "tlvdata":
            stream = schema.tlv_streams[parts[1]]
            record = next(r for r in stream.values() if r.name == parts[2])
            record.fields.append(FieldSpec(parts[3], parts[4], _count(parts[5] if len(parts) > 5 else "")))
        elif kind == "subtype":
            schema.subtypes[parts[1]] = RecordSpec(parts[1], None)
        elif kind == "subtypedata":
            schema.subtypes[parts[1]].fields.append(
                FieldSpec(parts[2], parts[3], _count(parts[4] if len(parts) > 4 else ""))
            )
        else:
            raise ValueError(f"unknown schema line kind {kind!r}")


SCHEMA_FILES = ("bolt01.csv", "bolt02.csv", "bolt04.csv", "bolt07.csv")


@cache
def default_schema() -> Schema:
    """Every message of BOLT 1, 2, 4 and 7, loaded once from the package data."""
    schema = Schema()
    folder = resources.files("lightspeed.codec") / "schemas"
    for name in SCHEMA_FILES:
        parse_csv((folder / name).read_text().splitlines(), schema, onion_failures=name == "bolt04.csv")
    # The spec text sometimes defines `<message>_tlvs` without listing it as a field.
    for message in schema.messages.values():
        if message.tlv_stream is None and f"{message.name}_tlvs" in schema.tlv_streams:
            message.tlv_stream = f"{message.name}_tlvs"
    return schema
