"""Byte-for-byte agreement with pyln-proto's message codec driven by the pyln-bolt1/2/7 CSVs.

pyln-bolt* ship the message CSVs of a 2022 spec revision; every message they define is
checked here, both ways: pyln writes the same values to the same bytes we do, and pyln
reads our bytes back into the same values.
"""

from __future__ import annotations

import io
from typing import Any

import pyln.spec.bolt1 as pyln_bolt1
import pyln.spec.bolt2 as pyln_bolt2
import pyln.spec.bolt7 as pyln_bolt7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyln.proto.message import Message as PylnMessage
from pyln.proto.message import MessageNamespace

from lightspeed.codec.messages import (
    Error,
    Init,
    Ping,
    Pong,
    Warning,
    decode_message,
    encode_message,
    make_message,
)
from lightspeed.codec.schema import FieldSpec, RecordSpec, default_schema
from tests.test_messages_properties import _byte_count_fields_fit, record_strategy

pytestmark = pytest.mark.interop
SCHEMA = default_schema()
NAMESPACES = {name: ns.namespace for ns in (pyln_bolt2, pyln_bolt7) for name in ns.namespace.messagetypes}


def _to_pyln(spec: FieldSpec, value: Any) -> Any:
    """Our field value as pyln-proto holds it: byte → int, byte arrays → int lists, scid → int."""
    if spec.type == "byte":
        return list(value) if spec.count is not None else value[0]
    if isinstance(value, (list, tuple)):
        return [_to_pyln(FieldSpec(spec.name, spec.type), v) for v in value]
    if spec.type == "short_channel_id":
        return int.from_bytes(value, "big")
    return value


def _pyln_fields(record: RecordSpec, values: dict[str, Any]) -> dict[str, Any]:
    return {f.name: _to_pyln(f, values[f.name]) for f in record.fields if f.name not in record.length_fields}


def _pyln_write(namespace: MessageNamespace, name: str, fields: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    PylnMessage(namespace.get_msgtype(name), **fields).write(out)
    return out.getvalue()


def _pyln_read(namespace: MessageNamespace, data: bytes) -> PylnMessage:
    message = PylnMessage.read(namespace, io.BytesIO(data))
    assert message is not None
    return message


def test_pyln_covers_the_bolt2_and_bolt7_messages() -> None:
    assert len(NAMESPACES) == 24
    for name, namespace in NAMESPACES.items():
        ours = SCHEMA.messages[name]
        theirs = namespace.get_msgtype(name)
        assert theirs.number == ours.number
        # Same fixed fields in the same order (the 2022 CSVs lack some newer TLV streams).
        assert [f.name for f in theirs.fields if f.name != "tlvs"] == [f.name for f in ours.fields]


@pytest.mark.parametrize("name", sorted(NAMESPACES))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_same_bytes_as_pyln(name: str, data: st.DataObject) -> None:
    spec = SCHEMA.messages[name]
    values = data.draw(record_strategy(spec))
    if not _byte_count_fields_fit(spec, values):
        return
    namespace = NAMESPACES[name]
    ours = encode_message(make_message(name, **values))
    fields = _pyln_fields(spec, values)
    assert _pyln_write(namespace, name, fields) == ours
    theirs = _pyln_read(namespace, ours).fields
    assert {k: v for k, v in theirs.items() if k in fields} == fields
    assert decode_message(ours) == make_message(name, **values)


def test_open_channel_tlvs_match_pyln() -> None:
    values: dict[str, Any] = {
        "chain_hash": bytes(range(32)), "temporary_channel_id": b"\x07" * 32, "funding_satoshis": 1_000_000,
        "push_msat": 5, "dust_limit_satoshis": 546, "max_htlc_value_in_flight_msat": 2**40,
        "channel_reserve_satoshis": 10_000, "htlc_minimum_msat": 1, "feerate_per_kw": 253,
        "to_self_delay": 144, "max_accepted_htlcs": 483, "channel_flags": b"\x01",
        **{k: bytes([2]) + bytes([i]) * 32 for i, k in enumerate(
            ["funding_pubkey", "revocation_basepoint", "payment_basepoint",
             "delayed_payment_basepoint", "htlc_basepoint", "first_per_commitment_point"], 1)},
    }
    tlvs = {"upfront_shutdown_script": {"shutdown_scriptpubkey": b"\x00\x14" + b"\x09" * 20},
            "channel_type": {"type": b"\x10\x00"}}
    ours = encode_message(make_message("open_channel", tlvs, **values))
    spec = SCHEMA.messages["open_channel"]
    pyln_tlvs = {"upfront_shutdown_script": {"shutdown_scriptpubkey": list(b"\x00\x14" + b"\x09" * 20)},
                 "channel_type": {"type": list(b"\x10\x00")}}
    fields = {**_pyln_fields(spec, values), "tlvs": pyln_tlvs}
    assert _pyln_write(pyln_bolt2.namespace, "open_channel", fields) == ours
    assert _pyln_read(pyln_bolt2.namespace, ours).fields == fields


@settings(max_examples=50, deadline=None)
@given(
    st.binary(max_size=4), st.binary(max_size=40),
    st.none() | st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    st.none() | st.binary(max_size=20),
)
def test_init_matches_pyln(globalfeatures: bytes, features: bytes, networks: list[bytes] | None,
                           remote_addr: bytes | None) -> None:
    ours = encode_message(Init(globalfeatures, features, None if networks is None else tuple(networks), remote_addr))
    fields: dict[str, Any] = {"globalfeatures": list(globalfeatures), "features": list(features), "tlvs": {}}
    if networks is not None:
        fields["tlvs"]["networks"] = {"chains": networks}
    if remote_addr is not None:
        fields["tlvs"]["remote_addr"] = {"data": list(remote_addr)}
    assert _pyln_write(pyln_bolt1.namespace, "init", fields) == ours
    assert _pyln_read(pyln_bolt1.namespace, ours).fields == fields


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=100), st.integers(0, 65535), st.binary(max_size=100))
def test_error_warning_ping_pong_match_pyln(channel_id: bytes, data: bytes, num: int, ignored: bytes) -> None:
    ns = pyln_bolt1.namespace
    assert _pyln_write(ns, "error", {"channel_id": channel_id, "data": list(data)}) == encode_message(Error(channel_id, data))
    assert _pyln_write(ns, "warning", {"channel_id": channel_id, "data": list(data)}) == encode_message(
        Warning(channel_id, data))
    assert _pyln_write(ns, "ping", {"num_pong_bytes": num, "ignored": list(ignored)}) == encode_message(Ping(num, ignored))
    assert _pyln_write(ns, "pong", {"ignored": list(ignored)}) == encode_message(Pong(ignored))
