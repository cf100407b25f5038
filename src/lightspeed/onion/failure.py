"""BOLT 4 failure messages and the encrypted return packet.

The failing hop writes ``hmac(um) || u16 len || failuremsg || u16 pad_len || pad``
and XORs it with its ``ammag`` stream; every hop on the way back XORs again with
its own. The sender peels the layers in route order and the first hop whose
``um`` HMAC matches is the one that failed. Failure messages are described as
data (:data:`FAILURE_FIELDS`) and one codec reads and writes all of them.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.codec.tlv import decode_tlv_stream, encode_tlv_stream
from lightspeed.errors import DecodeError, OnionError, UsageError
from lightspeed.onion.attribution import verify_attribution
from lightspeed.onion.sphinx import generate_key, generate_stream, xor_bytes

BADONION = 0x8000
PERM = 0x4000
NODE = 0x2000
UPDATE = 0x1000

#: The sender keeps decrypting this many times whatever the route length (timing privacy).
MAX_DECRYPTIONS = 27
#: BOLT #4: the erring node SHOULD make `failure_len` plus `pad_len` equal to 256.
DEFAULT_PADDED_LENGTH = 256


class FailureCode(IntEnum):
    """Every BOLT 4 ``failure_code`` with its flag bits."""

    TEMPORARY_NODE_FAILURE = NODE | 2
    PERMANENT_NODE_FAILURE = PERM | NODE | 2
    REQUIRED_NODE_FEATURE_MISSING = PERM | NODE | 3
    INVALID_ONION_VERSION = BADONION | PERM | 4
    INVALID_ONION_HMAC = BADONION | PERM | 5
    INVALID_ONION_KEY = BADONION | PERM | 6
    TEMPORARY_CHANNEL_FAILURE = UPDATE | 7
    PERMANENT_CHANNEL_FAILURE = PERM | 8
    REQUIRED_CHANNEL_FEATURE_MISSING = PERM | 9
    UNKNOWN_NEXT_PEER = PERM | 10
    AMOUNT_BELOW_MINIMUM = UPDATE | 11
    FEE_INSUFFICIENT = UPDATE | 12
    INCORRECT_CLTV_EXPIRY = UPDATE | 13
    EXPIRY_TOO_SOON = UPDATE | 14
    INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS = PERM | 15
    FINAL_INCORRECT_CLTV_EXPIRY = 18
    FINAL_INCORRECT_HTLC_AMOUNT = 19
    CHANNEL_DISABLED = UPDATE | 20
    EXPIRY_TOO_FAR = 21
    INVALID_ONION_PAYLOAD = PERM | 22
    MPP_TIMEOUT = 23
    INVALID_ONION_BLINDING = BADONION | PERM | 24


#: The data fields of each failure, in wire order: (attribute, kind).
FAILURE_FIELDS: dict[FailureCode, tuple[tuple[str, str], ...]] = {
    FailureCode.INVALID_ONION_VERSION: (("sha256_of_onion", "sha256"),),
    FailureCode.INVALID_ONION_HMAC: (("sha256_of_onion", "sha256"),),
    FailureCode.INVALID_ONION_KEY: (("sha256_of_onion", "sha256"),),
    FailureCode.INVALID_ONION_BLINDING: (("sha256_of_onion", "sha256"),),
    FailureCode.TEMPORARY_CHANNEL_FAILURE: (("channel_update", "update"),),
    FailureCode.AMOUNT_BELOW_MINIMUM: (("htlc_msat", "u64"), ("channel_update", "update")),
    FailureCode.FEE_INSUFFICIENT: (("htlc_msat", "u64"), ("channel_update", "update")),
    FailureCode.INCORRECT_CLTV_EXPIRY: (("cltv_expiry", "u32"), ("channel_update", "update")),
    FailureCode.EXPIRY_TOO_SOON: (("channel_update", "update"),),
    FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS: (("htlc_msat", "u64"), ("height", "u32")),
    FailureCode.FINAL_INCORRECT_CLTV_EXPIRY: (("cltv_expiry", "u32"),),
    FailureCode.FINAL_INCORRECT_HTLC_AMOUNT: (("htlc_msat", "u64"),),
    FailureCode.CHANNEL_DISABLED: (("disabled_flags", "u16"), ("channel_update", "update")),
    FailureCode.INVALID_ONION_PAYLOAD: (("tlv_type", "bigsize"), ("offset", "u16")),
}
_FIXED = {"u16": 2, "u32": 4, "u64": 8, "sha256": 32}


@dataclass(frozen=True)
class FailureMessage:
    """A decoded ``failuremsg``. Fields the code does not define stay ``None``.

    ``htlc_msat`` is ``incoming_htlc_amt`` for ``final_incorrect_htlc_amount``.
    Unknown codes keep their raw data in ``data`` so a sender can still act on the flags.
    """

    code: int
    sha256_of_onion: bytes | None = None
    channel_update: bytes | None = None
    htlc_msat: int | None = None
    cltv_expiry: int | None = None
    height: int | None = None
    disabled_flags: int | None = None
    tlv_type: int | None = None
    offset: int | None = None
    data: bytes = b""
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def is_badonion(self) -> bool:
        return bool(self.code & BADONION)

    @property
    def is_permanent(self) -> bool:
        return bool(self.code & PERM)

    @property
    def is_node(self) -> bool:
        return bool(self.code & NODE)

    @property
    def has_update(self) -> bool:
        return bool(self.code & UPDATE)

    def to_bytes(self) -> bytes:
        out = bytearray(struct.pack(">H", self.code))
        try:
            fields = FAILURE_FIELDS.get(FailureCode(self.code), ())
        except ValueError:
            fields = ()
            out += self.data
        for name, kind in fields:
            value = getattr(self, name)
            if value is None:
                raise UsageError(f"failure {self.code:#06x} needs {name}")
            if kind == "update":
                out += struct.pack(">H", len(value)) + value
            elif kind == "bigsize":
                out += encode_bigsize(value)
            elif kind == "sha256":
                if len(value) != 32:
                    raise UsageError(f"{name} must be 32 bytes")
                out += value
            else:
                out += value.to_bytes(_FIXED[kind], "big")
        if self.tlvs:
            out += encode_tlv_stream(self.tlvs)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> FailureMessage:
        if len(data) < 2:
            raise OnionError("failure_code", "failure message shorter than 2 bytes")
        code = int.from_bytes(data[:2], "big")
        try:
            known = FailureCode(code)
        except ValueError:
            return cls(code, data=data[2:])
        values: dict[str, object] = {}
        offset = 2
        for name, kind in FAILURE_FIELDS.get(known, ()):
            if kind == "bigsize":
                values[name], offset = decode_bigsize(data, offset, name)
                continue
            if kind == "update":
                if offset + 2 > len(data):
                    raise OnionError(name, "truncated length")
                length = int.from_bytes(data[offset: offset + 2], "big")
                offset += 2
            else:
                length = _FIXED[kind]
            if offset + length > len(data):
                raise OnionError(name, f"needs {length} bytes, {len(data) - offset} left")
            raw = data[offset: offset + length]
            offset += length
            values[name] = raw if kind in ("update", "sha256") else int.from_bytes(raw, "big")
        # BOLT #4: the message data is followed by an optional TLV stream.
        tlvs = decode_tlv_stream(data[offset:], known_types=(), field="failure tlvs")
        return cls(code, tlvs=tuple(tlvs.items()), **values)  # type: ignore[arg-type]


def create_failure_packet(
    shared_secret: bytes, failure: bytes, padded_length: int = DEFAULT_PADDED_LENGTH
) -> bytes:
    """The erring hop's return packet: authenticated with ``um``, padded, obfuscated with ``ammag``."""
    # BOLT #4: MUST set `pad` such that the `failure_len` plus `pad_len` is at least 256.
    if padded_length < DEFAULT_PADDED_LENGTH:
        raise UsageError("failure_len + pad_len must be at least 256")
    if len(failure) > 0xFFFF:
        raise UsageError("failure message longer than 65535 bytes")
    pad_len = max(padded_length - len(failure), 0)
    body = struct.pack(">H", len(failure)) + failure + struct.pack(">H", pad_len) + bytes(pad_len)
    mac = hmac.digest(generate_key(b"um", shared_secret), body, "sha256")
    return wrap_failure_packet(shared_secret, mac + body)


def wrap_failure_packet(shared_secret: bytes, packet: bytes) -> bytes:
    """One obfuscation layer, added by each hop on the way back (and by the erring hop)."""
    return xor_bytes(packet, generate_stream(generate_key(b"ammag", shared_secret), len(packet)))


@dataclass(frozen=True)
class AttributedFailure:
    """A failure the sender could attribute: ``hop_index`` 0 is the first hop of the route.

    ``hold_times`` (100 ms units, route order) are those the hops reported in verified
    attribution data, when it came with the failure.
    """

    hop_index: int
    failure: FailureMessage
    raw_message: bytes
    hold_times: tuple[int, ...] = ()


class CorruptedFailure(OnionError):
    """No hop's HMAC matches the return packet. With attribution data, ``blamed_hop`` is the
    first hop whose attribution HMAC failed (it or its downstream peer corrupted the packet)."""

    def __init__(self, field: str, reason: str, blamed_hop: int | None = None) -> None:
        super().__init__(field, reason)
        self.blamed_hop = blamed_hop


def decode_failure_packet(
    shared_secrets: Sequence[bytes], packet: bytes, attribution_data: bytes | None = None
) -> AttributedFailure:
    """Peel the layers in route order; the first hop whose ``um`` HMAC matches failed.

    Raises :class:`CorruptedFailure` when no hop's HMAC matches (a hop corrupted the
    packet); BOLT #4: when the failure source cannot be identified from the return packet
    AND `attribution_data` is present, SHOULD use `attribution_data` to identify the
    failure source, so it then names the hop to blame. Raises :class:`OnionError` when
    the failure message itself is malformed.
    """
    received = packet
    if len(packet) < 32 + 4:
        raise OnionError("failure packet", f"{len(packet)} bytes is too short")
    found: AttributedFailure | None = None
    decryptions = 0
    for index, secret in enumerate(shared_secrets):
        packet = wrap_failure_packet(secret, packet)
        decryptions += 1
        mac, body = packet[:32], packet[32:]
        if hmac.compare_digest(mac, hmac.digest(generate_key(b"um", secret), body, "sha256")):
            found = AttributedFailure(index, FailureMessage(0), _failure_body(body))
            break
    # BOLT #4: SHOULD continue decrypting, until the loop has been repeated 27 times ...
    # SHOULD use constant `ammag` and `um` keys to obfuscate the route length.
    dummy = bytes(32)
    for _ in range(decryptions, MAX_DECRYPTIONS):
        dummy_packet = wrap_failure_packet(dummy, packet)
        hmac.compare_digest(dummy_packet[:32], hmac.digest(generate_key(b"um", dummy), dummy_packet[32:], "sha256"))
    if found is None:
        blamed = None
        if attribution_data is not None:
            blamed = verify_attribution(shared_secrets, received, attribution_data).first_invalid_hop
        raise CorruptedFailure("failure packet", "no hop's HMAC matches: the packet was corrupted on the way back",
                               blamed)
    try:
        message = FailureMessage.from_bytes(found.raw_message)
    except DecodeError as exc:
        raise OnionError(f"failure from hop {found.hop_index}: {exc.field}", exc.reason) from None
    hold_times: tuple[int, ...] = ()
    if attribution_data is not None:
        hold_times = verify_attribution(shared_secrets, received, attribution_data, final_hop=found.hop_index).hold_times
    return AttributedFailure(found.hop_index, message, found.raw_message, hold_times)


def _failure_body(body: bytes) -> bytes:
    if len(body) < 2:
        raise OnionError("failure_len", "missing")
    length = int.from_bytes(body[:2], "big")
    if 2 + length > len(body):
        raise OnionError("failure_len", f"{length} exceeds the packet")
    return body[2: 2 + length]
