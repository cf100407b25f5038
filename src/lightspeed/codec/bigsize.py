"""BigSize (BOLT 1): the canonical variable-length integer of TLV streams."""

from __future__ import annotations

from lightspeed.errors import DecodeError, UsageError


def encode_bigsize(value: int) -> bytes:
    if value < 0 or value > 0xFFFFFFFFFFFFFFFF:
        raise UsageError(f"BigSize value out of range: {value}")
    if value < 0xFD:
        return bytes([value])
    if value <= 0xFFFF:
        return b"\xfd" + value.to_bytes(2, "big")
    if value <= 0xFFFFFFFF:
        return b"\xfe" + value.to_bytes(4, "big")
    return b"\xff" + value.to_bytes(8, "big")


def decode_bigsize(data: bytes, offset: int = 0, field: str = "bigsize") -> tuple[int, int]:
    """Read one BigSize at ``offset``: ``(value, offset after it)``.

    BOLT #1: a reader MUST fail on a non-minimal encoding or a short read.
    """
    if offset >= len(data):
        raise DecodeError(field, "unexpected end of data")
    first = data[offset]
    if first < 0xFD:
        return first, offset + 1
    width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
    end = offset + 1 + width
    if end > len(data):
        raise DecodeError(field, "unexpected end of data")
    value = int.from_bytes(data[offset + 1 : end], "big")
    if value < minimum:
        raise DecodeError(field, "decoded bigsize is not canonical")
    return value, end
