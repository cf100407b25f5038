"""Table-driven reading and writing of the BOLT 12 message fields.

Offers, invoice requests and invoices are each a flat list of optional TLV fields,
every one a (type, attribute, codec) triple. Each message declares its table once
and reads and writes through it, so a field's codec and its name in errors cannot
drift apart between the reader and the writer. The per-message rules (required,
forbidden, cross-field) stay in the message modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lightspeed.errors import UsageError
from lightspeed.offers.tlv_fields import (
    Bip353Name,
    BlindedPayInfo,
    FallbackAddress,
    TlvRecord,
    check_point,
    feature_bits,
    field_name,
    read_bip353_name,
    read_blindedpay,
    read_chain_hashes,
    read_fallbacks,
    read_fixed,
    read_paths,
    read_point,
    read_tu32,
    read_tu64,
    read_utf8,
    write_paths,
    write_tu,
)

Reader = Callable[[bytes, str], Any]
Writer = Callable[[Any, str], bytes]


@dataclass(frozen=True)
class Codec:
    """How one field's value becomes bytes and back; both name the field in their errors."""

    read: Reader
    write: Writer


def _raw_read(value: bytes, field: str) -> bytes:
    return value


def _raw_write(value: bytes, field: str) -> bytes:
    return value


def _fixed(length: int) -> Codec:
    def write(value: bytes, field: str) -> bytes:
        if len(value) != length:
            raise UsageError(f"{field} is {length} bytes")
        return value

    return Codec(lambda value, field: read_fixed(value, length, field), write)


def _write_chains(chains: Sequence[bytes], field: str) -> bytes:
    if any(len(chain) != 32 for chain in chains):
        raise UsageError(f"{field}: every chain hash is 32 bytes")
    return b"".join(chains)


def _write_blindedpay(infos: Sequence[BlindedPayInfo], field: str) -> bytes:
    return b"".join(info.to_bytes() for info in infos)


def _write_fallbacks(fallbacks: Sequence[FallbackAddress], field: str) -> bytes:
    return b"".join(fallback.to_bytes() for fallback in fallbacks)


def _write_bip353(name: Bip353Name, field: str) -> bytes:
    return name.to_bytes()


RAW = Codec(_raw_read, _raw_write)
TU64 = Codec(read_tu64, lambda value, field: write_tu(value, 8, field))
TU32 = Codec(read_tu32, lambda value, field: write_tu(value, 4, field))
UTF8 = Codec(read_utf8, lambda value, field: value.encode())
POINT = Codec(read_point, check_point)
SHA256 = _fixed(32)
SIGNATURE_64 = _fixed(64)
CHAIN_HASHES = Codec(read_chain_hashes, _write_chains)
PATHS = Codec(read_paths, write_paths)
BLINDEDPAY = Codec(read_blindedpay, _write_blindedpay)
FALLBACKS = Codec(read_fallbacks, _write_fallbacks)
BIP353_NAME = Codec(read_bip353_name, _write_bip353)


@dataclass(frozen=True)
class Field:
    """One TLV field of a message: its type, the dataclass attribute holding it, its codec."""

    tlv_type: int
    attribute: str
    codec: Codec

    @property
    def name(self) -> str:
        return field_name(self.tlv_type)


def read_fields(records: Iterable[TlvRecord], table: Sequence[Field],
                skip: Callable[[int], bool]) -> tuple[dict[str, Any], tuple[tuple[int, bytes], ...]]:
    """Decode the records the table knows into attribute values; the others (unless ``skip``
    says another table owns them) come back as unknown ``(type, value)`` pairs."""
    by_type = {f.tlv_type: f for f in table}
    values: dict[str, Any] = {}
    unknown: list[tuple[int, bytes]] = []
    for record in records:
        if skip(record.type):
            continue
        spec = by_type.get(record.type)
        if spec is None:
            unknown.append((record.type, record.value))
        else:
            values[spec.attribute] = spec.codec.read(record.value, spec.name)
    return values, tuple(unknown)


def write_fields(message: object, table: Sequence[Field]) -> list[tuple[int, bytes]]:
    """The records of every field of ``message`` in the table that is not ``None``."""
    out: list[tuple[int, bytes]] = []
    for spec in table:
        value = getattr(message, spec.attribute)
        if value is not None:
            out.append((spec.tlv_type, spec.codec.write(value, spec.name)))
    return out


class TlvMessage:
    """What every BOLT 12 message value object shares (mixed into the frozen dataclasses)."""

    features: bytes | None
    unknown_records: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        # Records are kept in type order, as on the wire, so equal messages compare equal.
        object.__setattr__(self, "unknown_records", tuple(sorted(self.unknown_records)))

    @property
    def feature_bits(self) -> frozenset[int]:
        return feature_bits(self.features or b"")
