"""Every schema message round-trips with generated values; arbitrary bytes raise only DecodeError."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.codec.messages import (
    UnknownMessage,
    WireMessage,
    decode_message,
    encode_message,
    make_message,
)
from lightspeed.codec.schema import (
    FIXED_SIZES,
    FieldSpec,
    RecordSpec,
    default_schema,
)
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError

SCHEMA = default_schema()
POINTS = [pubkey_from_privkey(bytes([i]) * 32) for i in range(1, 9)]
INT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64, "tu16": 16, "tu32": 32, "tu64": 64, "bigsize": 64}


def value_strategy(spec: FieldSpec) -> st.SearchStrategy[Any]:
    t = spec.type
    if t in INT_BITS:
        return st.integers(0, 2 ** INT_BITS[t] - 1)
    if t == "s64":
        return st.integers(-(2**63), 2**63 - 1)
    if t == "point":
        return st.sampled_from(POINTS)
    if t == "sciddir_or_pubkey":
        return st.one_of(st.sampled_from(POINTS), st.tuples(st.sampled_from([b"\0", b"\1"]), st.binary(min_size=8, max_size=8)).map(lambda p: p[0] + p[1]))
    if t in FIXED_SIZES:
        return st.binary(min_size=FIXED_SIZES[t], max_size=FIXED_SIZES[t])
    if t in SCHEMA.subtypes:
        return record_strategy(SCHEMA.subtypes[t])
    return st.binary(max_size=20)  # raw (undefined) types take the rest


def record_strategy(record: RecordSpec) -> st.SearchStrategy[dict[str, Any]]:
    lengths = record.length_fields
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for spec in record.fields:
        if spec.name in lengths:
            continue
        if spec.count is None:
            parts[spec.name] = value_strategy(spec)
        elif spec.type == "byte":
            size = spec.count if isinstance(spec.count, int) else None
            parts[spec.name] = st.binary(min_size=size or 0, max_size=size if size is not None else 40)
        else:
            size = spec.count if isinstance(spec.count, int) else None
            item = value_strategy(FieldSpec(spec.name, spec.type))
            parts[spec.name] = st.lists(item, min_size=size or 0, max_size=size if size is not None else 3)
    return st.fixed_dictionaries(parts)


def _byte_count_fields_fit(record: RecordSpec, values: dict[str, Any]) -> bool:
    # A length carried in a `byte` or u16 field caps the generated list/bytes.
    limits = {f.name: 2 ** (8 * FIXED_SIZES.get(f.type, 8)) - 1 for f in record.fields}
    return all(len(values[f.name]) <= limits[f.count] for f in record.fields
               if isinstance(f.count, str) and f.count != "..." and f.name in values)


def tlv_strategy(stream_name: str) -> st.SearchStrategy[dict[str | int, Any]]:
    """A random subset of the stream's known records, plus a few unknown odd ones kept raw."""
    stream = SCHEMA.tlv_streams[stream_name]
    known = st.fixed_dictionaries(
        {}, optional={record.name: record_strategy(record) for record in stream.values()}
    )
    unknown = st.dictionaries(
        st.integers(0, 2**64 - 1).map(lambda n: n | 1).filter(lambda n: n not in stream),
        st.binary(max_size=10),
        max_size=2,
    )
    return st.tuples(known, unknown).map(lambda kv: {**kv[0], **kv[1]})


HAND_WRITTEN = {"init", "error", "warning", "ping", "pong"}
NAMES = sorted(spec.name for spec in SCHEMA.messages_by_type.values() if spec.name not in HAND_WRITTEN)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_message_round_trips(name: str, data: st.DataObject) -> None:
    spec = SCHEMA.messages[name]
    values = data.draw(record_strategy(spec))
    tlvs = data.draw(tlv_strategy(spec.tlv_stream)) if spec.tlv_stream else {}
    if not _byte_count_fields_fit(spec, values):
        return
    encoded = encode_message(make_message(name, tlvs, **values))
    decoded = decode_message(encoded)
    assert encode_message(decoded) == encoded
    assert isinstance(decoded, WireMessage) and name == decoded.NAME
    assert decoded == make_message(name, tlvs, **values)


def test_schema_covers_the_bolts() -> None:
    expected = {"init", "error", "warning", "ping", "pong", "open_channel", "accept_channel", "funding_created",
                "funding_signed", "channel_ready", "shutdown", "closing_signed", "update_add_htlc",
                "update_fulfill_htlc", "update_fail_htlc", "update_fail_malformed_htlc", "commitment_signed",
                "revoke_and_ack", "update_fee", "channel_reestablish", "channel_announcement", "node_announcement",
                "channel_update", "announcement_signatures", "query_short_channel_ids", "reply_short_channel_ids_end",
                "query_channel_range", "reply_channel_range", "gossip_timestamp_filter", "onion_message"}
    assert expected <= set(NAMES) | HAND_WRITTEN
    assert SCHEMA.failures_by_code[0x4000 | 15].name == "incorrect_or_unknown_payment_details"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except DecodeError as exc:
        assert exc.field and exc.reason
        return
    if isinstance(message, UnknownMessage):
        assert message.type % 2 == 1


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([spec.number for spec in SCHEMA.messages_by_type.values()]), st.binary(max_size=300))
def test_known_types_with_garbage_payload_raise_only_decode_error(number: int, payload: bytes) -> None:
    try:
        decode_message(number.to_bytes(2, "big") + payload)
    except DecodeError as exc:
        assert exc.field and exc.reason


def test_unknown_even_type_is_an_error_and_odd_is_ignored() -> None:
    with pytest.raises(DecodeError, match="unknown even message type 32768"):
        decode_message(b"\x80\x00")
    assert decode_message(b"\x80\x01abc") == UnknownMessage(0x8001, b"abc")


def test_generated_classes_are_up_to_date() -> None:
    """tools/gen_messages.py output must match the committed module (the schema is the truth)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "tools" / "gen_messages.py"), "--check"], check=False)
    assert result.returncode == 0, "run: python tools/gen_messages.py"


def test_encoding_bad_values_is_a_usage_error() -> None:
    from lightspeed.errors import UsageError

    good = {"channel_id": b"\0" * 32, "feerate_per_kw": 253}
    assert encode_message(make_message("update_fee", **good)) == bytes.fromhex("0086") + b"\0" * 32 + (253).to_bytes(4, "big")
    for bad in ({**good, "feerate_per_kw": 2**32}, {**good, "channel_id": b"\0"}, {**good, "feerate_per_kw": "x"}):
        with pytest.raises(UsageError):
            encode_message(make_message("update_fee", **bad))
    with pytest.raises(UsageError):
        make_message("no_such_message")
    with pytest.raises(UsageError):
        encode_message(make_message("update_fee", {"whatever": {}}, **good))
