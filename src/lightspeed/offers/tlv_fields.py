"""BOLT 12 TLV types, their ranges, and the field codecs every message shares.

The offer fields are mirrored into invoice requests, and both into invoices, so
each message type owns a distinct range of TLV types. The codecs here read and
write one field value; the per-message rules (which fields are required or
forbidden) live in ``offer.py``, ``invoice_request.py`` and ``invoice.py``.
Every reader fails with a :class:`DecodeError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from coincurve import PublicKey

from lightspeed.codec.bigsize import decode_bigsize
from lightspeed.codec.features import Features
from lightspeed.codec.tlv import decode_tu, encode_tlv_stream, encode_tu
from lightspeed.errors import DecodeError, UsageError
from lightspeed.onion.blinding import BlindedPath

# Offer fields (BOLT #12 "TLV Fields for Offers").
OFFER_CHAINS = 2
OFFER_METADATA = 4
OFFER_CURRENCY = 6
OFFER_AMOUNT = 8
OFFER_DESCRIPTION = 10
OFFER_FEATURES = 12
OFFER_ABSOLUTE_EXPIRY = 14
OFFER_PATHS = 16
OFFER_ISSUER = 18
OFFER_QUANTITY_MAX = 20
OFFER_ISSUER_ID = 22
# Invoice request fields.
INVREQ_METADATA = 0
INVREQ_CHAIN = 80
INVREQ_AMOUNT = 82
INVREQ_FEATURES = 84
INVREQ_QUANTITY = 86
INVREQ_PAYER_ID = 88
INVREQ_PAYER_NOTE = 89
INVREQ_PATHS = 90
INVREQ_BIP_353_NAME = 91
# Invoice fields.
INVOICE_PATHS = 160
INVOICE_BLINDEDPAY = 162
INVOICE_CREATED_AT = 164
INVOICE_RELATIVE_EXPIRY = 166
INVOICE_PAYMENT_HASH = 168
INVOICE_AMOUNT = 170
INVOICE_FALLBACKS = 172
INVOICE_FEATURES = 174
INVOICE_NODE_ID = 176
# Signature TLV elements.
SIGNATURE = 240

FIELD_NAMES: dict[int, str] = {
    OFFER_CHAINS: "offer_chains", OFFER_METADATA: "offer_metadata", OFFER_CURRENCY: "offer_currency",
    OFFER_AMOUNT: "offer_amount", OFFER_DESCRIPTION: "offer_description", OFFER_FEATURES: "offer_features",
    OFFER_ABSOLUTE_EXPIRY: "offer_absolute_expiry", OFFER_PATHS: "offer_paths", OFFER_ISSUER: "offer_issuer",
    OFFER_QUANTITY_MAX: "offer_quantity_max", OFFER_ISSUER_ID: "offer_issuer_id",
    INVREQ_METADATA: "invreq_metadata", INVREQ_CHAIN: "invreq_chain", INVREQ_AMOUNT: "invreq_amount",
    INVREQ_FEATURES: "invreq_features", INVREQ_QUANTITY: "invreq_quantity", INVREQ_PAYER_ID: "invreq_payer_id",
    INVREQ_PAYER_NOTE: "invreq_payer_note", INVREQ_PATHS: "invreq_paths",
    INVREQ_BIP_353_NAME: "invreq_bip_353_name",
    INVOICE_PATHS: "invoice_paths", INVOICE_BLINDEDPAY: "invoice_blindedpay",
    INVOICE_CREATED_AT: "invoice_created_at", INVOICE_RELATIVE_EXPIRY: "invoice_relative_expiry",
    INVOICE_PAYMENT_HASH: "invoice_payment_hash", INVOICE_AMOUNT: "invoice_amount",
    INVOICE_FALLBACKS: "invoice_fallbacks", INVOICE_FEATURES: "invoice_features", INVOICE_NODE_ID: "invoice_node_id",
    SIGNATURE: "signature",
}
OFFER_TYPES = frozenset(range(OFFER_CHAINS, OFFER_ISSUER_ID + 1, 2))
INVREQ_TYPES = frozenset({INVREQ_METADATA, INVREQ_CHAIN, INVREQ_AMOUNT, INVREQ_FEATURES, INVREQ_QUANTITY,
                          INVREQ_PAYER_ID, INVREQ_PAYER_NOTE, INVREQ_PATHS, INVREQ_BIP_353_NAME})
INVOICE_TYPES = frozenset(range(INVOICE_PATHS, INVOICE_NODE_ID + 1, 2))

# BOLT #12: MUST NOT set any TLV fields outside the inclusive ranges: 1 to 79 and
# 1000000000 to 1999999999 (offers).
OFFER_RANGES = ((1, 79), (1_000_000_000, 1_999_999_999))
# BOLT #12: ... non-signature TLV fields outside the inclusive ranges: 0 to 159 and
# 1000000000 to 2999999999 (invoice requests; an invoice must match these exactly).
INVREQ_RANGES = ((0, 159), (1_000_000_000, 2_999_999_999))
# BOLT #12: signature TLV elements: TLV types 240 through 1000 (inclusive).
SIGNATURE_RANGE = (240, 1000)
# BOLT #12 (Invoice Features): 16/17 Multi-part-payment support, the only bits defined.
INVOICE_KNOWN_FEATURES = frozenset({16, 17})
MPP_COMPULSORY = 16
MPP_OPTIONAL = 17


def in_ranges(tlv_type: int, ranges: Iterable[tuple[int, int]]) -> bool:
    for low, high in ranges:  # noqa: SIM110 (a plain loop: this runs for every record of every message)
        if low <= tlv_type <= high:
            return True
    return False


def is_signature_type(tlv_type: int) -> bool:
    return SIGNATURE_RANGE[0] <= tlv_type <= SIGNATURE_RANGE[1]


def field_name(tlv_type: int) -> str:
    return FIELD_NAMES.get(tlv_type, f"type {tlv_type}")


@dataclass(frozen=True)
class TlvRecord:
    """One record exactly as it sits on the wire (``raw`` is type, length and value)."""

    type: int
    value: bytes
    raw: bytes


def read_records(stream: bytes, field: str = "tlv_stream") -> tuple[TlvRecord, ...]:
    """Read every record of a TLV stream in wire order, keeping each record's raw bytes.

    BOLT #1: a reader MUST fail on non-minimal BigSize, on a length beyond the end of the
    stream, and if types are not strictly increasing. Unknown even types are checked by
    the per-message code, which knows its namespace.
    """
    records: list[TlvRecord] = []
    offset = 0
    last = -1
    while offset < len(stream):
        start = offset
        # One-byte BigSize values (below 0xFD) are the common case: read them inline.
        tlv_type = stream[offset]
        if tlv_type < 0xFD:
            offset += 1
        else:
            tlv_type, offset = decode_bigsize(stream, offset, f"{field} type")
        if offset < len(stream) and stream[offset] < 0xFD:
            length = stream[offset]
            offset += 1
        else:
            length, offset = decode_bigsize(stream, offset, f"{field} length")
        # BOLT #1: if decoded `type`s are not strictly-increasing (including situations where
        # two or more occurrences of the same `type` are met): MUST fail to parse the tlv_stream.
        if tlv_type <= last:
            raise DecodeError(field, f"type {tlv_type} is not strictly increasing")
        # BOLT #1: if `length` exceeds the number of bytes remaining in the message: MUST fail.
        if length > len(stream) - offset:
            raise DecodeError(field, f"type {tlv_type}: length {length} exceeds the stream")
        records.append(TlvRecord(tlv_type, stream[offset : offset + length], stream[start : offset + length]))
        offset += length
        last = tlv_type
    return tuple(records)


def check_unknown_even(records: Sequence[TlvRecord], known: Iterable[int],
                       name: Callable[[int], str] = field_name) -> None:
    """BOLT #1: if `type` is not known: if `type` is even: MUST fail to parse the tlv_stream."""
    known_set = frozenset(known)
    for record in records:
        if record.type % 2 == 0 and record.type not in known_set:
            raise DecodeError(name(record.type), "unknown even TLV type")


def write_records(records: Iterable[tuple[int, bytes]]) -> bytes:
    try:
        return encode_tlv_stream(records)
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# ---- value codecs -------------------------------------------------------------------------


def read_tu64(value: bytes, field: str) -> int:
    return decode_tu(value, 8, field)


def read_tu32(value: bytes, field: str) -> int:
    return decode_tu(value, 4, field)


def write_tu(value: int, max_bytes: int, field: str) -> bytes:
    if not 0 <= value < 1 << (8 * max_bytes):
        raise UsageError(f"{field}: {value} does not fit in tu{8 * max_bytes}")
    return encode_tu(value)


def read_utf8(value: bytes, field: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(field, "not valid UTF-8") from None


def read_point(value: bytes, field: str) -> bytes:
    """A 33-byte compressed secp256k1 point (`point`)."""
    if len(value) != 33 or value[0] not in (2, 3):
        raise DecodeError(field, f"not a 33-byte compressed point ({len(value)} bytes)")
    try:
        PublicKey(value)
    except ValueError:
        raise DecodeError(field, "not a point on the curve") from None
    return value


def check_point(value: bytes, field: str) -> bytes:
    """The writer's side of :func:`read_point`: a bad key is the caller's bug."""
    try:
        return read_point(value, field)
    except DecodeError as exc:
        raise UsageError(str(exc)) from None


def read_chain_hashes(value: bytes, field: str) -> tuple[bytes, ...]:
    if len(value) % 32:
        raise DecodeError(field, f"length {len(value)} is not a multiple of 32")
    return tuple(value[i : i + 32] for i in range(0, len(value), 32))


def read_fixed(value: bytes, length: int, field: str) -> bytes:
    if len(value) != length:
        raise DecodeError(field, f"{len(value)} bytes, expected {length}")
    return value


def feature_bits(data: bytes) -> frozenset[int]:
    return Features.from_bytes(data).bits


def features_to_bytes(bits: Iterable[int]) -> bytes:
    return Features(frozenset(bits)).to_bytes()


def feature_field(features: Iterable[int] | bytes | None) -> bytes | None:
    """A writer's features argument (bit numbers, or exact bytes) as the field value; an
    empty set of bits is left out."""
    if features is None or isinstance(features, bytes):
        return features
    return features_to_bytes(features) or None


def check_features(data: bytes, known: Iterable[int], field: str) -> None:
    """BOLT #12: if `..._features` contains unknown _even_ bits that are non-zero: MUST
    reject (offers: MUST NOT respond). Unknown odd bits: MUST ignore the bit."""
    known_set = frozenset(known)
    unknown = sorted(b for b in feature_bits(data) if b % 2 == 0 and b not in known_set)
    if unknown:
        raise DecodeError(field, f"unknown even feature bit {unknown[0]}")


def read_paths(value: bytes, field: str) -> tuple[BlindedPath, ...]:
    """``...*blinded_path``: zero or more paths filling the value exactly.

    BOLT #12: if `num_hops` is 0 in any `blinded_path` ...: MUST NOT respond / MUST reject
    (the blinded path parser refuses a zero hop count).
    """
    paths: list[BlindedPath] = []
    offset = 0
    while offset < len(value):
        try:
            path, offset = BlindedPath.parse(value, offset)
        except DecodeError as exc:
            raise DecodeError(field, f"path {len(paths)}: {exc.field}: {exc.reason}") from None
        paths.append(path)
    return tuple(paths)


def write_paths(paths: Sequence[BlindedPath], field: str) -> bytes:
    for path in paths:
        if len(path.first_node_id) == 33:
            check_point(path.first_node_id, f"{field} first_node_id")
        elif len(path.first_node_id) != 9 or path.first_node_id[0] not in (0, 1):
            raise UsageError(f"{field}: first_node_id must be a point or a sciddir")
        check_point(path.first_path_key, f"{field} first_path_key")
        for hop in path.hops:
            check_point(hop.blinded_node_id, f"{field} blinded_node_id")
    return b"".join(path.to_bytes() for path in paths)


@dataclass(frozen=True)
class BlindedPayInfo:
    """``blinded_payinfo``: what paying through one of the ``invoice_paths`` costs."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    features: bytes = b""

    def to_bytes(self) -> bytes:
        try:
            return (self.fee_base_msat.to_bytes(4, "big") + self.fee_proportional_millionths.to_bytes(4, "big")
                    + self.cltv_expiry_delta.to_bytes(2, "big") + self.htlc_minimum_msat.to_bytes(8, "big")
                    + self.htlc_maximum_msat.to_bytes(8, "big") + len(self.features).to_bytes(2, "big")
                    + self.features)
        except OverflowError:
            raise UsageError("blinded_payinfo field out of range") from None

    @property
    def feature_bits(self) -> frozenset[int]:
        return feature_bits(self.features)

    @property
    def usable(self) -> bool:
        """BOLT #12: MUST NOT use the corresponding `invoice_paths`.`path` if
        `payinfo`.`features` has any unknown even bits set (no bits are defined)."""
        return not any(b % 2 == 0 for b in self.feature_bits)


def read_blindedpay(value: bytes, field: str) -> tuple[BlindedPayInfo, ...]:
    infos: list[BlindedPayInfo] = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 28:
            raise DecodeError(field, f"payinfo {len(infos)} is truncated")
        chunk = value[offset : offset + 28]
        flen = int.from_bytes(chunk[26:28], "big")
        end = offset + 28 + flen
        if end > len(value):
            raise DecodeError(field, f"payinfo {len(infos)}: features are truncated")
        infos.append(BlindedPayInfo(
            int.from_bytes(chunk[0:4], "big"), int.from_bytes(chunk[4:8], "big"),
            int.from_bytes(chunk[8:10], "big"), int.from_bytes(chunk[10:18], "big"),
            int.from_bytes(chunk[18:26], "big"), value[offset + 28 : end]))
        offset = end
    return tuple(infos)


@dataclass(frozen=True)
class FallbackAddress:
    """``fallback_address``: an on-chain alternative (witness version and program)."""

    version: int
    address: bytes

    def to_bytes(self) -> bytes:
        if not 0 <= self.version <= 255 or len(self.address) > 0xFFFF:
            raise UsageError("fallback_address out of range")
        return bytes([self.version]) + len(self.address).to_bytes(2, "big") + self.address

    @property
    def usable(self) -> bool:
        """BOLT #12: MUST ignore any `fallback_address` for which `version` is greater than
        16, for which `address` is less than 2 or greater than 40 bytes, or which does not
        meet known requirements for the given `version` (v0: 20 or 32 bytes)."""
        if self.version > 16 or not 2 <= len(self.address) <= 40:
            return False
        return self.version != 0 or len(self.address) in (20, 32)


def read_fallbacks(value: bytes, field: str) -> tuple[FallbackAddress, ...]:
    out: list[FallbackAddress] = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 3:
            raise DecodeError(field, f"fallback {len(out)} is truncated")
        length = int.from_bytes(value[offset + 1 : offset + 3], "big")
        end = offset + 3 + length
        if end > len(value):
            raise DecodeError(field, f"fallback {len(out)}: address is truncated")
        out.append(FallbackAddress(value[offset], value[offset + 3 : end]))
        offset = end
    return tuple(out)


_BIP353_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.")


@dataclass(frozen=True)
class Bip353Name:
    """``invreq_bip_353_name``: the ``name`` and ``domain`` of a BIP 353 human-readable name."""

    name: str
    domain: str

    def to_bytes(self) -> bytes:
        name, domain = self.name.encode(), self.domain.encode()
        for part, label in ((name, "name"), (domain, "domain")):
            if len(part) > 255 or not set(part) <= _BIP353_CHARS:
                raise UsageError(f"invreq_bip_353_name {label} must be up to 255 of 0-9 a-z A-Z - _ .")
        return bytes([len(name)]) + name + bytes([len(domain)]) + domain


def read_bip353_name(value: bytes, field: str) -> Bip353Name:
    if not value:
        raise DecodeError(field, "empty")
    name_end = 1 + value[0]
    if name_end >= len(value):
        raise DecodeError(field, "truncated")
    domain_end = name_end + 1 + value[name_end]
    if domain_end != len(value):
        raise DecodeError(field, "lengths do not match the field length")
    name, domain = value[1:name_end], value[name_end + 1 :]
    # BOLT #12: MUST reject the invoice request if `name` or `domain` contain any bytes
    # which are not `0`-`9`, `a`-`z`, `A`-`Z`, `-`, `_` or `.`.
    for part, label in ((name, "name"), (domain, "domain")):
        if not set(part) <= _BIP353_CHARS:
            raise DecodeError(field, f"{label} contains a byte outside 0-9 a-z A-Z - _ .")
    return Bip353Name(name.decode(), domain.decode())
