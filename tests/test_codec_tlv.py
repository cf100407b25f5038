"""Property tests for BigSize, truncated integers and TLV streams (BOLT 1 rules)."""

from __future__ import annotations

import itertools
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.codec.tlv import (
    decode_signed,
    decode_tlv_stream,
    decode_tu,
    encode_signed,
    encode_tlv_stream,
    encode_tu,
)
from lightspeed.errors import DecodeError, UsageError

U64 = st.integers(0, 2**64 - 1)
RECORDS = st.dictionaries(U64, st.binary(max_size=40), max_size=8)


@given(U64)
def test_bigsize_round_trips_and_is_minimal(value: int) -> None:
    encoded = encode_bigsize(value)
    assert decode_bigsize(encoded) == (value, len(encoded))
    assert len(encoded) == (1 if value < 0xFD else 3 if value < 2**16 else 5 if value < 2**32 else 9)


@given(U64, st.sampled_from([(0xFD, 2), (0xFE, 4), (0xFF, 8)]))
def test_bigsize_rejects_every_non_minimal_encoding(value: int, prefix: tuple[int, int]) -> None:
    marker, width = prefix
    if value >= 1 << (8 * width):
        return
    encoded = bytes([marker]) + value.to_bytes(width, "big")
    if len(encoded) > len(encode_bigsize(value)):
        with pytest.raises(DecodeError, match="not canonical"):
            decode_bigsize(encoded)
    else:
        assert decode_bigsize(encoded) == (value, len(encoded))


@given(st.binary(max_size=12), st.integers(0, 12))
def test_bigsize_arbitrary_bytes_raise_only_decode_error(data: bytes, offset: int) -> None:
    try:
        value, end = decode_bigsize(data, offset)
    except DecodeError:
        return
    assert data[offset:end] == encode_bigsize(value)


def test_bigsize_encode_range() -> None:
    with pytest.raises(UsageError):
        encode_bigsize(-1)
    with pytest.raises(UsageError):
        encode_bigsize(2**64)


@given(st.sampled_from([2, 4, 8]), st.data())
def test_truncated_integers_round_trip(width: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, 2 ** (8 * width) - 1))
    encoded = encode_tu(value)
    assert len(encoded) <= width and encoded[:1] != b"\0"
    assert decode_tu(encoded, width) == value
    with pytest.raises(DecodeError, match="not minimal"):
        decode_tu(b"\0" + encoded, width + 1)


@given(st.binary(max_size=10), st.sampled_from([2, 4, 8]))
def test_truncated_integers_reject_only_with_decode_error(data: bytes, width: int) -> None:
    try:
        value = decode_tu(data, width)
    except DecodeError:
        assert len(data) > width or data[:1] == b"\0"
        return
    assert encode_tu(value) == data


@given(st.integers(-(2**63), 2**63 - 1))
def test_signed_integers_round_trip(value: int) -> None:
    assert decode_signed(encode_signed(value)) == value


@given(RECORDS)
def test_tlv_stream_round_trips_in_increasing_order(records: dict[int, bytes]) -> None:
    stream = encode_tlv_stream(records.items())
    decoded = decode_tlv_stream(stream)
    assert decoded == records
    assert list(decoded) == sorted(records)  # BOLT #1: MUST order by strictly-increasing type
    # Every even type we list as known decodes; listing none makes the first even one fatal.
    evens = [t for t in records if t % 2 == 0]
    assert decode_tlv_stream(stream, known_types=set(records)) == records
    if evens:
        with pytest.raises(DecodeError, match=f"unknown even type {min(evens)}"):
            decode_tlv_stream(stream, known_types=set())
    else:
        assert decode_tlv_stream(stream, known_types=set()) == records  # unknown odd: skipped over


@given(st.lists(st.tuples(U64, st.binary(max_size=8)), min_size=2, max_size=6))
def test_tlv_stream_out_of_order_or_duplicate_types_fail(records: list[tuple[int, bytes]]) -> None:
    types = [t for t, _ in records]
    stream = b"".join(encode_bigsize(t) + encode_bigsize(len(v)) + v for t, v in records)
    if all(a < b for a, b in itertools.pairwise(types)):
        assert list(decode_tlv_stream(stream)) == types
    else:
        with pytest.raises(DecodeError, match="not strictly increasing"):
            decode_tlv_stream(stream)


@given(RECORDS, st.integers(1, 50))
def test_tlv_stream_truncated_anywhere_fails_or_is_a_shorter_stream(records: dict[int, bytes], cut: int) -> None:
    stream = encode_tlv_stream(records.items())
    if cut > len(stream):
        return
    try:
        decoded = decode_tlv_stream(stream[:-cut])
    except DecodeError:
        return
    # Only a cut on a record boundary can parse, and then it is a prefix of the records.
    assert list(decoded.items()) == sorted(records.items())[: len(decoded)]


@given(st.binary(max_size=200))
def test_tlv_stream_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        decoded = decode_tlv_stream(data, known_types={1, 2, 3})
    except DecodeError:
        return
    assert encode_tlv_stream(decoded.items()) == data  # a stream that parses is canonical


def test_duplicate_types_are_a_usage_error_on_encode() -> None:
    with pytest.raises(UsageError):
        encode_tlv_stream([(1, b""), (1, b"x")])


def test_schema_csvs_ship_as_package_data() -> None:
    folder = resources.files("lightspeed.codec") / "schemas"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".csv"))
    assert names == ["bolt01.csv", "bolt02.csv", "bolt04.csv", "bolt07.csv"]
    assert "msgtype,init,16" in (folder / "bolt01.csv").read_text()
    assert "msgtype,open_channel,32" in (folder / "bolt02.csv").read_text()
