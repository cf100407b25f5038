"""Decoders of the stream protocol: frames, tariffs, receipts. Anything in, a DecodeError naming the
field or a value out, never anything else; limits at their boundary."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import DecodeError, UsageError
from lightspeed.stream import Receipt, SignedStatement, Statement, Tariff, sign_statement
from lightspeed.stream.messages import MAX_FRAME, SCHEMAS, encode, parse
from tests.test_stream15_machine import SELLER_KEY, pair, run_honestly

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=80)
    | st.sampled_from(["00" * 16, "02" + "11" * 32, "ab" * 32, "cd" * 64, "zz" * 16]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_frame_parses_or_raises_decode_error(frame: str | bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse(frame)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(SCHEMAS)), st.dictionaries(st.sampled_from(
    ["anchor", "ticks", "batch_ticks", "allowance_id", "stream_id", "index", "link", "node_id", "tariff",
     "invoice", "start_index", "start_link", "last_index", "delivered_units", "units", "total_units",
     "statement", "signature", "code", "reason", "resume_key", "sellers"]), json_values, max_size=8))
def test_frames_of_every_type_with_any_fields_parse_or_raise_decode_error(kind: str, fields: dict[str, Any]) -> None:
    try:
        message = parse(json.dumps({"type": kind, **fields}))
    except DecodeError as exc:
        assert exc.field.startswith((kind + ".", "type", "frame")), exc.field
        return
    required = {name for name, spec in SCHEMAS[kind].items() if not spec.startswith("?")}
    assert message["type"] == kind and required <= set(message)


def test_optional_fields_may_be_absent_and_the_sellers_list_is_checked_item_by_item() -> None:
    stream_id = "ab" * 16
    assert parse(json.dumps({"type": "resume", "stream_id": stream_id})) == {
        "type": "resume", "stream_id": bytes.fromhex(stream_id)}  # refused later: no signature
    hello = {"type": "tariff", "stream_id": stream_id, "node_id": "02" * 33, "tariff": {}}
    assert "sellers" not in parse(json.dumps(hello))
    sellers = [{"url": "ws://127.0.0.1:1/charge", "node_id": "03" * 33}]
    assert parse(json.dumps({**hello, "sellers": sellers}))["sellers"] == [("ws://127.0.0.1:1/charge", b"\x03" * 33)]
    assert json.loads(encode("tariff", **{**hello, "sellers": [("ws://h:1/c", b"\x03" * 33)]}))["sellers"] == [
        {"url": "ws://h:1/c", "node_id": "03" * 33}]
    for bad, field in (([{"url": "http://x/charge", "node_id": "03" * 33}], "tariff.sellers[0].url"),
                       ([{"url": "ws://x/charge", "node_id": "zz"}], "tariff.sellers[0].node_id"),
                       (sellers * 9, "tariff.sellers"), ("ws://x", "tariff.sellers")):
        with pytest.raises(DecodeError) as exc:
            parse(json.dumps({**hello, "sellers": bad}))
        assert exc.value.field == field
    with pytest.raises(DecodeError, match="signature"):
        parse(json.dumps({"type": "resume", "stream_id": stream_id, "signature": "00"}))


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_receipt_json_decodes_or_raises_decode_error(data: Any) -> None:
    with contextlib.suppress(DecodeError):
        Receipt.from_json(data)


def test_a_frame_at_the_size_limit_is_read_one_byte_more_is_refused() -> None:
    base = encode("close")
    assert parse(base + " " * (MAX_FRAME - len(base)))["type"] == "close"  # JSON allows trailing spaces
    with pytest.raises(DecodeError, match="frame"):
        parse(base + " " * (MAX_FRAME - len(base) + 1))


def test_tariff_boundaries() -> None:
    assert Tariff("x" * 16, 1, 1, 1, 1).unit == "x" * 16  # 16 characters: the most
    with pytest.raises(UsageError, match="unit"):
        Tariff("x" * 17, 1, 1, 1, 1)
    with pytest.raises(UsageError, match="max_units: must be a positive multiple of tick_units"):
        Tariff("Wh", 1, 3, 10)
    with pytest.raises(DecodeError) as raised:
        Tariff.from_json({"unit": "Wh", "msat_per_unit": 0, "tick_units": 1, "max_units": 1, "window_ticks": 1})
    assert raised.value.field == "tariff.msat_per_unit"
    with pytest.raises(DecodeError) as raised:
        Tariff.from_json({"unit": "Wh", "msat_per_unit": 1, "tick_units": True, "max_units": 1, "window_ticks": 1})
    assert raised.value.field == "tariff.tick_units"


def signed_statement() -> SignedStatement:
    tariff = Tariff("Wh", 3, 2, 100, 4)
    buyer, seller = pair(tariff, max_msat=10 * tariff.tick_msat)
    run_honestly(buyer, seller)
    return sign_statement(seller.close(now=1_700_000_000), SELLER_KEY)


@pytest.mark.parametrize("field,value", [
    ("delivered_units", 19), ("last_index", 9), ("closed_at", 1), ("lane", 1), ("stream_id", "ff" * 16),
    ("start_link", "00" * 32),
])
def test_any_change_to_a_signed_statement_breaks_its_signature(field: str, value: object) -> None:
    signed = signed_statement()
    assert signed.valid()
    data = signed.statement.to_json()
    data[field] = value
    data["paid_ticks"] = data["last_index"] - data["start_index"]
    data["paid_msat"] = data["paid_ticks"] * signed.statement.tariff.tick_msat
    changed = SignedStatement(Statement.from_json(data), signed.signature)
    assert not changed.valid()


def test_derived_fields_must_follow_from_the_signed_ones() -> None:
    data = signed_statement().statement.to_json()
    data["paid_msat"] += 1
    with pytest.raises(DecodeError) as raised:
        Statement.from_json(data)
    assert raised.value.field == "statement.paid_msat"


def test_signing_refuses_a_key_that_is_not_the_sellers() -> None:
    statement = signed_statement().statement
    with pytest.raises(UsageError, match="node_secret"):
        sign_statement(statement, b"\x01" * 32)
