"""``invoice_error``: the informative error returned for an invoice request or invoice.

It travels in an onion message's ``invoice_error`` field (via the ``reply_path``);
this module only encodes and decodes the TLV stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.tlv_fields import (
    check_unknown_even,
    read_records,
    read_tu64,
    read_utf8,
    write_records,
    write_tu,
)

ERRONEOUS_FIELD = 1
SUGGESTED_VALUE = 3
ERROR = 5
_KNOWN = frozenset({ERRONEOUS_FIELD, SUGGESTED_VALUE, ERROR})


@dataclass(frozen=True)
class InvoiceError:
    """``error`` explains; ``erroneous_field`` names the TLV type that had a problem and
    ``suggested_value`` a value the sender would accept for it."""

    error: str
    erroneous_field: int | None = None
    suggested_value: bytes | None = None
    unknown_records: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        # Records are kept in type order, as on the wire, so equal messages compare equal.
        object.__setattr__(self, "unknown_records", tuple(sorted(self.unknown_records)))

    def to_tlv(self) -> bytes:
        # BOLT #12: if it sets `erroneous_field`: MAY set `suggested_value`; otherwise: MUST NOT
        # set `suggested_value`.
        if self.suggested_value is not None and self.erroneous_field is None:
            raise UsageError("suggested_value needs erroneous_field")
        records = list(self.unknown_records)
        if any(t in _KNOWN or t % 2 == 0 for t, _ in records):
            raise UsageError("extra invoice_error records must be unknown odd types")
        if self.erroneous_field is not None:
            records.append((ERRONEOUS_FIELD, write_tu(self.erroneous_field, 8, "erroneous_field")))
        if self.suggested_value is not None:
            records.append((SUGGESTED_VALUE, self.suggested_value))
        records.append((ERROR, self.error.encode()))
        return write_records(records)

    @classmethod
    def from_tlv(cls, data: bytes) -> InvoiceError:
        """Read an ``invoice_error`` TLV stream.

        BOLT #12's reader requirements are "FIXME!", so the reader holds the writer's rules
        (an ``error`` string; ``suggested_value`` only with ``erroneous_field``): what it
        accepts re-encodes byte for byte.
        """
        records = read_records(data, "invoice_error")
        check_unknown_even(records, _KNOWN, lambda t: f"type {t}")
        error: str | None = None
        erroneous: int | None = None
        suggested: bytes | None = None
        unknown = []
        for record in records:
            if record.type == ERRONEOUS_FIELD:
                erroneous = read_tu64(record.value, "erroneous_field")
            elif record.type == SUGGESTED_VALUE:
                suggested = record.value
            elif record.type == ERROR:
                error = read_utf8(record.value, "error")
            else:
                unknown.append((record.type, record.value))
        # BOLT #12: A writer of an invoice_error: MUST set `error` to an explanatory string.
        if error is None:
            raise DecodeError("error", "missing")
        if suggested is not None and erroneous is None:
            raise DecodeError("suggested_value", "set without erroneous_field")
        return cls(error, erroneous, suggested, tuple(unknown))
