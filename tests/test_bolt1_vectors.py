"""BOLT 1 Appendices A-D: BigSize, TLV streams (namespaces n1, n2), message extension, signed integers."""

from __future__ import annotations

from typing import Any

import pytest

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.codec.messages import Init, decode_message, encode_message
from lightspeed.codec.schema import default_schema
from lightspeed.codec.tlv import decode_signed, encode_signed
from lightspeed.codec.wire import decode_tlvs
from lightspeed.errors import DecodeError
from tests.support.vectors import load_vectors

V = load_vectors("bolt01.json")
SCHEMA = default_schema()


@pytest.mark.parametrize("case", V["bigsize_decoding"], ids=[c["name"] for c in V["bigsize_decoding"]])
def test_bigsize_decoding(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["bytes"])
    if case.get("exp_error"):
        with pytest.raises(DecodeError):
            _, end = decode_bigsize(data)
            if end != len(data):  # pragma: no cover - a vector with trailing bytes
                raise DecodeError("bigsize", "trailing bytes")
        return
    assert decode_bigsize(data) == (case["value"], len(data))


@pytest.mark.parametrize("case", V["bigsize_encoding"], ids=[c["name"] for c in V["bigsize_encoding"]])
def test_bigsize_encoding(case: dict[str, Any]) -> None:
    assert encode_bigsize(case["value"]).hex() == case["bytes"]


@pytest.mark.parametrize("namespace", ["n1", "n2"])
@pytest.mark.parametrize("case", V["tlv_failures_any_namespace"], ids=[c["stream"] or "empty" for c in V["tlv_failures_any_namespace"]])
def test_tlv_failures_in_any_namespace(case: dict[str, Any], namespace: str) -> None:
    with pytest.raises(DecodeError):
        decode_tlvs(SCHEMA, namespace, bytes.fromhex(case["stream"]))


@pytest.mark.parametrize("case", V["tlv_failures_n1"], ids=[c["stream"] for c in V["tlv_failures_n1"]])
def test_tlv_failures_in_n1(case: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        decode_tlvs(SCHEMA, "n1", bytes.fromhex(case["stream"]))


@pytest.mark.parametrize("namespace", ["n1", "n2"])
@pytest.mark.parametrize("case", V["tlv_ignored_any_namespace"], ids=[c["stream"] or "empty" for c in V["tlv_ignored_any_namespace"]])
def test_tlv_unknown_odd_records_are_ignored(case: dict[str, Any], namespace: str) -> None:
    decoded = decode_tlvs(SCHEMA, namespace, bytes.fromhex(case["stream"]))
    assert all(isinstance(key, int) and key % 2 == 1 for key in decoded)


@pytest.mark.parametrize("case", V["tlv_n1_values"], ids=[c["stream"] for c in V["tlv_n1_values"]])
def test_tlv_n1_values(case: dict[str, Any]) -> None:
    decoded = decode_tlvs(SCHEMA, "n1", bytes.fromhex(case["stream"]))
    record = decoded[case["record"]]
    for name, expected in case["values"].items():
        value = record[name]
        assert (value.hex() if isinstance(value, bytes) else value) == expected


@pytest.mark.parametrize("namespace", ["n1", "n2"])
def test_tlv_stream_failures(namespace: str) -> None:
    for case in V["tlv_stream_failures"][namespace]:
        with pytest.raises(DecodeError):
            decode_tlvs(SCHEMA, namespace, bytes.fromhex(case["stream"]))


def test_appending_a_higher_valid_stream_is_fine_and_an_invalid_one_fails() -> None:
    low, high = bytes.fromhex("0100"), bytes.fromhex("fd00fe020226")
    assert decode_tlvs(SCHEMA, "n1", low + high)["tlv4"] == {"cltv_delta": 550}
    for case in V["tlv_failures_n1"]:
        with pytest.raises(DecodeError):
            decode_tlvs(SCHEMA, "n1", low + bytes.fromhex(case["stream"]))


@pytest.mark.parametrize("hex_message", V["init_valid"])
def test_init_extension_valid(hex_message: str) -> None:
    message = decode_message(bytes.fromhex(hex_message))
    assert isinstance(message, Init)
    assert message.features == b"" and message.networks is None
    assert encode_message(message) == bytes.fromhex(hex_message)


@pytest.mark.parametrize("hex_message", V["init_invalid"])
def test_init_extension_invalid(hex_message: str) -> None:
    with pytest.raises(DecodeError):
        decode_message(bytes.fromhex(hex_message))


@pytest.mark.parametrize("case", V["signed_integers"], ids=[str(c["value"]) for c in V["signed_integers"]])
def test_signed_integers(case: dict[str, Any]) -> None:
    assert encode_signed(case["value"]).hex() == case["bytes"]
    assert decode_signed(bytes.fromhex(case["bytes"])) == case["value"]


def test_unknown_even_types_fail_in_n2_too() -> None:
    # BOLT 1 lists these under "either namespace"; the JSON keeps them with the n1 failures.
    either = [c for c in V["tlv_failures_n1"] if c["note"] == "unknown even type."]
    assert len(either) == 4
    for case in either:
        with pytest.raises(DecodeError, match="unknown even type"):
            decode_tlvs(SCHEMA, "n2", bytes.fromhex(case["stream"]))
