"""Lightning messages: typed BOLT 1 messages, and every other message generically.

``decode_message`` reads the 2-byte type and the payload by the schema
(:mod:`lightspeed.codec.schema`) and returns a typed frozen dataclass: the
connection-level BOLT 1 messages (:class:`Init`, :class:`Error`,
:class:`Warning`, :class:`Ping`, :class:`Pong`) are written by hand here, every
other message (``OpenChannel``, ``UpdateAddHtlc``, ``ChannelUpdate``,
``OnionMessage``...) is generated from the schema into
:mod:`lightspeed.codec.generated`. An unknown odd type comes back as
:class:`UnknownMessage` (to be ignored); an unknown even type raises.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

from lightspeed.codec.features import Features
from lightspeed.codec.generated import GENERATED_MESSAGES
from lightspeed.codec.message_base import WireMessage as WireMessage
from lightspeed.codec.schema import default_schema
from lightspeed.codec.wire import decode_record, decode_tlvs, encode_record, encode_tlvs
from lightspeed.errors import DecodeError, UsageError

MAX_PONG_BYTES = 65531  # BOLT 1: num_pong_bytes above this means "do not answer"


@dataclass(frozen=True)
class Init:
    """``init`` (16): the first message each side sends after the handshake."""

    globalfeatures: bytes = b""
    features: bytes = b""
    networks: tuple[bytes, ...] | None = None  # chain hashes the sender is interested in
    remote_addr: bytes | None = None
    unknown_tlvs: tuple[tuple[int, bytes], ...] = ()

    TYPE = 16

    @property
    def all_features(self) -> Features:
        """Both feature fields combined (BOLT #1: the receiver MUST combine (bitwise OR) them)."""
        return Features.from_bytes(self.globalfeatures) | Features.from_bytes(self.features)


@dataclass(frozen=True)
class Error:
    """``error`` (17): the sender is failing ``channel_id`` (all zeros: every channel)."""

    channel_id: bytes
    data: bytes = b""

    TYPE = 17


@dataclass(frozen=True)
class Warning:
    """``warning`` (1): something is wrong but the sender does not fail the channel."""

    channel_id: bytes
    data: bytes = b""

    TYPE = 1


@dataclass(frozen=True)
class Ping:
    """``ping`` (18): keepalive; asks for a pong with ``num_pong_bytes`` of padding."""

    num_pong_bytes: int
    ignored: bytes = b""

    TYPE = 18


@dataclass(frozen=True)
class Pong:
    """``pong`` (19): the answer to a ping."""

    ignored: bytes = b""

    TYPE = 19


@dataclass(frozen=True)
class UnknownMessage:
    """A message type this node does not know; odd types are to be ignored."""

    type: int
    payload: bytes


Message = Union[Init, Error, Warning, Ping, Pong, WireMessage, UnknownMessage]  # noqa: UP007


_GENERATED_BY_NAME: dict[str, type[WireMessage]] = {cls.NAME: cls for cls in GENERATED_MESSAGES}


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


_FIELD_NAMES: dict[type[WireMessage], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name != "tlvs") for cls in GENERATED_MESSAGES
}


def make_message(name: str, tlvs: dict[str | int, Any] | None = None, **fields: Any) -> WireMessage:
    """Build a schema message by its BOLT name, fields by their BOLT names (lists become tuples)."""
    cls = _GENERATED_BY_NAME.get(name)
    if cls is None:
        raise UsageError(f"unknown message {name!r} (init, error, warning, ping and pong have their own classes)")
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = _frozen(value)
    return cls(**fields, tlvs=dict(tlvs or {}))


def decode_message(data: bytes) -> Message:
    """Decode one message (type + payload); raises DecodeError naming the bad field."""
    if len(data) < 2:
        raise DecodeError("message type", "message shorter than its 2-byte type")
    number = int.from_bytes(data[:2], "big")
    schema = default_schema()
    spec = schema.messages_by_type.get(number)
    if spec is None:
        # BOLT #1: upon receiving a message of even, unknown type: MUST close the connection;
        # of odd, unknown type: MUST ignore the received message.
        if number % 2 == 0:
            raise DecodeError("message type", f"unknown even message type {number}")
        return UnknownMessage(number, data[2:])
    try:
        values, rest = decode_record(schema, spec, data[2:], spec.name)
        tlvs = decode_tlvs(schema, spec.tlv_stream, rest) if spec.tlv_stream and rest else {}
    except (ValueError, IndexError, KeyError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(spec.name, str(exc)) from None
    # Without a TLV stream, additional data at the end is ignored (BOLT 1 extension rule).
    return _typed(spec.name, values, tlvs)


def _typed(name: str, values: dict[str, Any], tlvs: dict[str | int, Any]) -> Message:
    if name == "init":
        networks = tlvs.get("networks")
        remote = tlvs.get("remote_addr")
        return Init(
            globalfeatures=values["globalfeatures"],
            features=values["features"],
            networks=tuple(networks["chains"]) if networks is not None else None,
            remote_addr=remote["data"] if remote is not None else None,
            unknown_tlvs=tuple((k, v) for k, v in tlvs.items() if isinstance(k, int)),
        )
    if name == "error":
        return Error(values["channel_id"], values["data"])
    if name == "warning":
        return Warning(values["channel_id"], values["data"])
    if name == "ping":
        return Ping(values["num_pong_bytes"], values["ignored"])
    if name == "pong":
        return Pong(values["ignored"])
    return make_message(name, tlvs, **values)


def encode_message(message: Message) -> bytes:
    """2-byte type + payload; raises UsageError for values that do not fit their fields."""
    try:
        return _encode(message)
    except UsageError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise UsageError(f"cannot encode {type(message).__name__}: {exc!r}") from exc


def _encode(message: Message) -> bytes:
    schema = default_schema()
    if isinstance(message, UnknownMessage):
        return message.type.to_bytes(2, "big") + message.payload
    values: dict[str, Any]
    if isinstance(message, Init):
        name, values = "init", {"globalfeatures": message.globalfeatures, "features": message.features}
        tlvs: dict[str | int, Any] = dict(message.unknown_tlvs)
        if message.networks is not None:
            tlvs["networks"] = {"chains": list(message.networks)}
        if message.remote_addr is not None:
            tlvs["remote_addr"] = {"data": message.remote_addr}
    elif isinstance(message, (Error, Warning)):
        name = "error" if isinstance(message, Error) else "warning"
        values, tlvs = {"channel_id": message.channel_id, "data": message.data}, {}
    elif isinstance(message, Ping):
        name, values, tlvs = "ping", {"num_pong_bytes": message.num_pong_bytes, "ignored": message.ignored}, {}
    elif isinstance(message, Pong):
        name, values, tlvs = "pong", {"ignored": message.ignored}, {}
    else:
        name, tlvs = message.NAME, dict(message.tlvs)
        values = {name: getattr(message, name) for name in _FIELD_NAMES[type(message)]}
    spec = schema.messages[name]
    assert spec.number is not None
    payload = encode_record(schema, spec, values)
    if tlvs:
        if spec.tlv_stream is None:
            raise UsageError(f"{name} has no TLV stream")
        payload += encode_tlvs(schema, spec.tlv_stream, tlvs)
    return spec.number.to_bytes(2, "big") + payload
