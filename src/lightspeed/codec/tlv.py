"""TLV streams (BOLT 1): ordered records of (BigSize type, BigSize length, value).

Decoding enforces the stream rules; interpreting record values is left to the
caller, which knows its own namespace of types.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.errors import DecodeError, UsageError


def encode_tlv_stream(records: Iterable[tuple[int, bytes]]) -> bytes:
    """Serialize records, sorted by type; duplicate types are a usage error."""
    out = bytearray()
    last = -1
    for tlv_type, value in sorted(records, key=lambda r: r[0]):
        if tlv_type == last:
            raise UsageError(f"duplicate TLV type {tlv_type}")
        last = tlv_type
        out += encode_bigsize(tlv_type) + encode_bigsize(len(value)) + value
    return bytes(out)


def decode_tlv_stream(
    data: bytes,
    known_types: Container[int] | None = None,
    field: str = "tlv",
) -> dict[int, bytes]:
    """Parse a TLV stream into ``{type: value}`` (insertion order = wire order).

    BOLT #1: the reader MUST fail if types are not strictly increasing, if a
    length exceeds the remaining bytes, or if an unknown type is even.
    ``known_types=None`` accepts every type (the caller checks parity itself).
    """
    records: dict[int, bytes] = {}
    offset = 0
    last = -1
    while offset < len(data):
        tlv_type, offset = decode_bigsize(data, offset, f"{field} type")
        length, offset = decode_bigsize(data, offset, f"{field} length")
        # BOLT #1: if decoded `type`s are not strictly-increasing (including situations
        # where two or more occurrences of the same `type` are met): MUST fail to parse the tlv_stream.
        if tlv_type <= last:
            raise DecodeError(field, f"type {tlv_type} is not strictly increasing")
        # BOLT #1: if `length` exceeds the number of bytes remaining in the message: MUST fail.
        if offset + length > len(data):
            raise DecodeError(field, f"type {tlv_type}: length {length} exceeds the stream")
        # BOLT #1: if `type` is not known: if `type` is even: MUST fail to parse the tlv_stream;
        # otherwise, if `type` is odd: MUST discard the next `length` bytes.
        if known_types is not None and tlv_type not in known_types and tlv_type % 2 == 0:
            raise DecodeError(field, f"unknown even type {tlv_type}")
        records[tlv_type] = data[offset : offset + length]
        offset += length
        last = tlv_type
    return records


def encode_tu(value: int) -> bytes:
    """Truncated unsigned integer (tu16/tu32/tu64): big-endian, no leading zeros."""
    if value < 0:
        raise UsageError("negative truncated integer")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def decode_tu(data: bytes, max_bytes: int, field: str = "tu") -> int:
    """BOLT #1: a reader MUST fail on a truncated integer with a leading zero byte."""
    if len(data) > max_bytes:
        raise DecodeError(field, f"truncated integer longer than {max_bytes} bytes")
    if data[:1] == b"\0":
        raise DecodeError(field, "truncated integer is not minimal")
    return int.from_bytes(data, "big")


def encode_signed(value: int) -> bytes:
    """Minimal big-endian two's complement (BOLT 1 Appendix D: s8/s16/s32/s64 values)."""
    length = 1
    while not -(1 << (8 * length - 1)) <= value < 1 << (8 * length - 1):
        length *= 2
    if length > 8:
        raise UsageError(f"{value} does not fit in 64 bits")
    return value.to_bytes(length, "big", signed=True)


def decode_signed(data: bytes, field: str = "signed integer") -> int:
    if len(data) not in (1, 2, 4, 8):
        raise DecodeError(field, f"{len(data)} bytes is not 1, 2, 4 or 8")
    return int.from_bytes(data, "big", signed=True)
