"""One generic encoder/decoder for every message, subtype and TLV stream in the schemas.

Values are plain Python: integers for integer types, ``bytes`` for fixed-size
types and byte arrays, lists for other arrays, dicts for subtypes, and for a TLV
stream a dict ``{record name: {field: value}}`` plus unknown odd records under
their number. Length fields (``len``, ``flen`` ...) never appear in values: the
encoder derives them and the decoder checks them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.codec.schema import FIXED_SIZES, TRUNCATED_MAX, FieldSpec, RecordSpec, Schema
from lightspeed.codec.tlv import decode_tlv_stream, encode_tlv_stream, encode_tu
from lightspeed.crypto.secp256k1 import is_valid_pubkey
from lightspeed.errors import DecodeError, UsageError

_SIGNED = {"s64"}


class _Reader:
    __slots__ = ("data", "pos", "where")

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(f"{self.where}.{field}", f"needs {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def _read_one(schema: Schema, reader: _Reader, spec: FieldSpec) -> Any:
    t = spec.type
    if t in FIXED_SIZES:
        raw = reader.take(FIXED_SIZES[t], spec.name)
        if t in ("u8", "u16", "u32", "u64"):
            return int.from_bytes(raw, "big")
        if t in _SIGNED:
            return int.from_bytes(raw, "big", signed=True)
        if t == "point" and not is_valid_pubkey(raw):
            raise DecodeError(f"{reader.where}.{spec.name}", "is not a valid compressed secp256k1 point")
        return raw
    if t in TRUNCATED_MAX:
        raw = reader.take(reader.remaining, spec.name)
        if len(raw) > TRUNCATED_MAX[t] or raw[:1] == b"\0":
            raise DecodeError(f"{reader.where}.{spec.name}", f"{t} is not minimally encoded")
        return int.from_bytes(raw, "big")
    if t == "bigsize":
        value, reader.pos = decode_bigsize(reader.data, reader.pos, f"{reader.where}.{spec.name}")
        return value
    if t == "sciddir_or_pubkey":
        # BOLT #4: a first byte of 0 or 1 is a direction then a short_channel_id; else a point.
        first = reader.take(1, spec.name)
        if first[0] in (0, 1):
            return first + reader.take(8, spec.name)
        raw = first + reader.take(32, spec.name)
        if not is_valid_pubkey(raw):
            raise DecodeError(f"{reader.where}.{spec.name}", "is neither a direction+scid nor a valid point")
        return raw
    if t in schema.subtypes:
        return _read_record(schema, reader, schema.subtypes[t])
    # A type the schemas name but do not define (e.g. BOLT 12 TLV streams): keep it raw.
    return reader.take(reader.remaining, spec.name)


_STRUCT_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "s64": "q"}


@dataclass(frozen=True)
class _Run:
    """Consecutive single fixed-size fields, read and written with one ``struct`` call."""

    layout: struct.Struct
    fields: tuple[FieldSpec, ...]
    sized: tuple[tuple[int, int], ...]  # (index, byte length) of the bytes-valued fields
    points: tuple[int, ...]  # indices of `point` fields, validated on decode


_Step = _Run | FieldSpec


@dataclass(frozen=True)
class _Plan:
    steps: tuple[_Step, ...]
    length_of: tuple[tuple[str, str], ...]  # (length field, the field it counts)
    length_names: frozenset[str]


_PLANS: dict[int, tuple[RecordSpec, _Plan]] = {}


def _plan(record: RecordSpec) -> _Plan:
    """The record's fields with runs of fixed-size scalars grouped (computed once per record)."""
    cached = _PLANS.get(id(record))
    if cached is not None and cached[0] is record:
        return cached[1]
    steps: list[_Step] = []
    run: list[FieldSpec] = []

    def close() -> None:
        if len(run) > 1:
            codes = [_STRUCT_CODES.get(f.type, f"{FIXED_SIZES[f.type]}s") for f in run]
            steps.append(_Run(
                struct.Struct(">" + "".join(codes)), tuple(run),
                tuple((i, FIXED_SIZES[f.type]) for i, f in enumerate(run) if f.type not in _STRUCT_CODES),
                tuple(i for i, f in enumerate(run) if f.type == "point"),
            ))
        else:
            steps.extend(run)
        run.clear()

    for spec in record.fields:
        if spec.count is None and spec.type in FIXED_SIZES:
            run.append(spec)
        else:
            close()
            steps.append(spec)
    close()
    length_of = tuple((f.count, f.name) for f in record.fields if isinstance(f.count, str) and f.count != "...")
    plan = _Plan(tuple(steps), length_of, frozenset(name for name, _ in length_of))
    _PLANS[id(record)] = (record, plan)
    return plan


def _read_record(schema: Schema, reader: _Reader, record: RecordSpec) -> dict[str, Any]:
    values: dict[str, Any] = {}
    plan = _plan(record)
    for step in plan.steps:
        if isinstance(step, _Run):
            if reader.remaining >= step.layout.size:
                unpacked = step.layout.unpack_from(reader.data, reader.pos)
                reader.pos += step.layout.size
                for index in step.points:
                    if not is_valid_pubkey(unpacked[index]):
                        raise DecodeError(f"{reader.where}.{step.fields[index].name}",
                                          "is not a valid compressed secp256k1 point")
                values.update(zip((f.name for f in step.fields), unpacked, strict=True))
            else:  # short: read field by field to name the one that is cut off
                for spec in step.fields:
                    values[spec.name] = _read_one(schema, reader, spec)
            continue
        spec = step
        if spec.count is None:
            value = _read_one(schema, reader, spec)
        else:
            if spec.count == "...":
                count = None
            elif isinstance(spec.count, int):
                count = spec.count
            else:
                count = values[spec.count]
            if spec.type == "byte":
                value = reader.take(reader.remaining if count is None else count, spec.name)
            else:
                items = []
                if count is None:
                    while reader.remaining:
                        items.append(_read_one(schema, reader, FieldSpec(spec.name, spec.type)))
                else:
                    for _ in range(count):
                        items.append(_read_one(schema, reader, FieldSpec(spec.name, spec.type)))
                value = items
        values[spec.name] = value
    for name in plan.length_names:
        values.pop(name, None)
    return values


def decode_record(schema: Schema, record: RecordSpec, data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """Fields of ``record`` from ``data``; returns the values and the unread rest."""
    reader = _Reader(data, where)
    values = _read_record(schema, reader, record)
    return values, data[reader.pos :]


def decode_tlvs(schema: Schema, stream_name: str, data: bytes) -> dict[str | int, Any]:
    """A TLV stream: known records by name; unknown odd ones kept raw under their number.

    BOLT #1: the reader MUST fail on unknown even types, non-increasing types,
    lengths past the end, and records whose value does not match their fields.
    """
    stream = schema.tlv_streams[stream_name]
    raw = decode_tlv_stream(data, known_types=stream.keys(), field=stream_name)
    out: dict[str | int, Any] = {}
    for number, value in raw.items():
        record = stream.get(number)
        if record is None:
            out[number] = value
            continue
        fields, rest = decode_record(schema, record, value, f"{stream_name}.{record.name}")
        if rest:
            raise DecodeError(f"{stream_name}.{record.name}", f"{len(rest)} bytes left over in the record")
        out[record.name] = fields
    return out


def _write_one(schema: Schema, spec: FieldSpec, value: Any) -> bytes:
    t = spec.type
    if t in ("u8", "u16", "u32", "u64", "s64"):
        return int(value).to_bytes(FIXED_SIZES[t], "big", signed=t in _SIGNED)
    if t in FIXED_SIZES:
        if len(value) != FIXED_SIZES[t]:
            raise UsageError(f"{spec.name}: {t} must be {FIXED_SIZES[t]} bytes, got {len(value)}")
        return bytes(value)
    if t in TRUNCATED_MAX:
        return encode_tu(int(value))
    if t == "bigsize":
        return encode_bigsize(int(value))
    if t in schema.subtypes:
        return encode_record(schema, schema.subtypes[t], value)
    return bytes(value)


def encode_record(schema: Schema, record: RecordSpec, values: Mapping[str, Any]) -> bytes:
    """Serialize ``values`` by ``record``'s fields, deriving length fields."""
    plan = _plan(record)
    lengths = {length: len(values[counted]) for length, counted in plan.length_of}
    out = bytearray()
    for step in plan.steps:
        if isinstance(step, _Run):
            items: list[Any] = [lengths[f.name] if f.name in lengths else values[f.name] for f in step.fields]
            for index, size in step.sized:  # struct would pad or cut a wrong-sized value
                if len(items[index]) != size:
                    field_spec = step.fields[index]
                    raise UsageError(f"{field_spec.name}: {field_spec.type} must be {size} bytes, got {len(items[index])}")
            try:
                out += step.layout.pack(*items)
            except struct.error as exc:
                raise UsageError(f"{record.name}: {exc}") from None
            continue
        spec = step
        if spec.name in lengths:
            out += _write_one(schema, spec, lengths[spec.name])
            continue
        value = values[spec.name]
        if spec.count is None:
            out += _write_one(schema, spec, value)
        elif spec.type == "byte":
            if isinstance(spec.count, int) and len(value) != spec.count:
                raise UsageError(f"{spec.name} must be {spec.count} bytes, got {len(value)}")
            out += value
        else:
            if isinstance(spec.count, int) and len(value) != spec.count:
                raise UsageError(f"{spec.name} must have {spec.count} items")
            for item in value:
                out += _write_one(schema, FieldSpec(spec.name, spec.type), item)
    return bytes(out)


def encode_tlvs(schema: Schema, stream_name: str, values: Mapping[str | int, Any]) -> bytes:
    stream = schema.tlv_streams[stream_name]
    by_name = {record.name: record for record in stream.values()}
    records = []
    for key, value in values.items():
        if isinstance(key, int):
            records.append((key, bytes(value)))
        else:
            record = by_name[key]
            assert record.number is not None
            records.append((record.number, encode_record(schema, record, value)))
    return encode_tlv_stream(records)
