"""Static invoices (draft bolts#1149 as LDK's ``offers/static_invoice.rs`` implements it).

An offline payee cannot answer an ``invoice_request``, so its LSP serves a *static* invoice
signed in advance: the offer's records, the BOLT 12 invoice fields without a payment hash
or amount (the payer pays a keysend-like HTLC whose preimage the payee makes up when it
comes back), and ``held_htlc_available_paths`` (236): blinded paths to the payee along which
the payer's LSP sends ``held_htlc_available``. Signed as BOLT 12 signs, with the tag
"lightning" || "static_invoice" || "signature" (LDK: ``SIGNATURE_TAG``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightspeed.codec.tlv import decode_tlv_stream, decode_tu, encode_tlv_stream, encode_tu
from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.merkle import merkle_root
from lightspeed.offers.sign import public_key_of, sign_merkle_root, verify_merkle_root
from lightspeed.offers.tlv_fields import (
    INVOICE_AMOUNT,
    INVOICE_BLINDEDPAY,
    INVOICE_CREATED_AT,
    INVOICE_FEATURES,
    INVOICE_NODE_ID,
    INVOICE_PATHS,
    INVOICE_PAYMENT_HASH,
    INVOICE_RELATIVE_EXPIRY,
    SIGNATURE,
)
from lightspeed.onion.blinding import BlindedPath

MESSAGE_NAME = "static_invoice"
#: LDK ``offers/invoice.rs``: ``(236, held_htlc_available_paths, ...)``, only in static invoices.
HELD_HTLC_AVAILABLE_PATHS = 236
DEFAULT_RELATIVE_EXPIRY = 7200  # BOLT 12's invoice default, which LDK keeps for static invoices


def _allowed(tlv_type: int) -> bool:
    # Offer records (1-79), invoice records (160-239), the signature, and the experimental
    # offer / invoice ranges; never invoice-request records (LDK parses exactly these streams).
    return (1 <= tlv_type <= 79 or 160 <= tlv_type <= 239 or tlv_type == SIGNATURE
            or 1_000_000_000 <= tlv_type < 2_000_000_000 or 3_000_000_000 <= tlv_type < 4_000_000_000)


def _paths(value: bytes, field: str) -> tuple[BlindedPath, ...]:
    paths: list[BlindedPath] = []
    offset = 0
    while offset < len(value):
        path, offset = BlindedPath.parse(value, offset)
        paths.append(path)
    if not paths:
        raise DecodeError(field, "no blinded path")
    return tuple(paths)


@dataclass(frozen=True)
class StaticInvoice:
    """A decoded, signature-checked static invoice. ``records`` are all its records but the signature."""

    records: tuple[tuple[int, bytes], ...]
    signature: bytes
    node_id: bytes
    created_at: int
    relative_expiry: int
    held_htlc_available_paths: tuple[BlindedPath, ...]

    def is_expired(self, now: int) -> bool:
        """BOLT 12: an invoice is expired once ``created_at + relative_expiry`` has passed."""
        return now > self.created_at + self.relative_expiry

    def to_bytes(self) -> bytes:
        return encode_tlv_stream([*self.records, (SIGNATURE, self.signature)])

    @classmethod
    def from_bytes(cls, data: bytes) -> StaticInvoice:
        records = decode_tlv_stream(data, None, field="static_invoice")
        for tlv_type in records:
            if not _allowed(tlv_type):
                raise DecodeError("static_invoice", f"type {tlv_type} does not belong in a static invoice")
        # LDK: UnexpectedPaymentHash / UnexpectedAmount: the payee has not chosen them yet.
        if INVOICE_PAYMENT_HASH in records:
            raise DecodeError("invoice_payment_hash", "a static invoice has no payment hash")
        if INVOICE_AMOUNT in records:
            raise DecodeError("invoice_amount", "a static invoice has no amount")
        for tlv_type, name in ((INVOICE_PATHS, "invoice_paths"), (INVOICE_BLINDEDPAY, "invoice_blindedpay"),
                               (INVOICE_CREATED_AT, "invoice_created_at"), (INVOICE_NODE_ID, "invoice_node_id"),
                               (HELD_HTLC_AVAILABLE_PATHS, "held_htlc_available_paths"), (SIGNATURE, "signature")):
            if tlv_type not in records:
                raise DecodeError(name, "missing")
        _paths(records[INVOICE_PATHS], "invoice_paths")
        held_paths = _paths(records[HELD_HTLC_AVAILABLE_PATHS], "held_htlc_available_paths")
        node_id = records[INVOICE_NODE_ID]
        if len(node_id) != 33:
            raise DecodeError("invoice_node_id", f"{len(node_id)} bytes, expected 33")
        created_at = decode_tu(records[INVOICE_CREATED_AT], 8, "invoice_created_at")
        expiry = (decode_tu(records[INVOICE_RELATIVE_EXPIRY], 4, "invoice_relative_expiry")
                  if INVOICE_RELATIVE_EXPIRY in records else DEFAULT_RELATIVE_EXPIRY)
        signature = records.pop(SIGNATURE)
        unsigned = tuple(records.items())
        # BOLT 12: MUST reject the invoice if `signature` is not a valid signature using
        # `invoice_node_id` as described in Signature Calculation.
        if not verify_merkle_root(MESSAGE_NAME, merkle_root(encode_tlv_stream(unsigned)), signature, node_id):
            raise DecodeError("signature", "is not invoice_node_id's signature of this static invoice")
        return cls(unsigned, signature, node_id, created_at, expiry, held_paths)


def sign_static_invoice(
    offer_records: Sequence[tuple[int, bytes]],
    payment_paths: bytes,
    blindedpay: bytes,
    held_htlc_available_paths: Sequence[BlindedPath],
    created_at: int,
    node_secret: bytes,
    relative_expiry: int | None = None,
    features: bytes | None = None,
) -> StaticInvoice:
    """Build and sign a static invoice for an offer (``offer_records``: its 1-79 records).

    ``payment_paths``/``blindedpay`` are the serialized ``invoice_paths`` and
    ``invoice_blindedpay`` fields (built by the blinded-path code the payee already has);
    ``features``: ``invoice_features`` (MPP/optional: the payer may pay in parts).
    """
    if any(not 1 <= t <= 79 for t, _ in offer_records):
        raise UsageError("offer records are types 1-79")
    if not held_htlc_available_paths:
        raise UsageError("a static invoice needs at least one held_htlc_available path")
    records = [*offer_records, (INVOICE_PATHS, payment_paths), (INVOICE_BLINDEDPAY, blindedpay),
               (INVOICE_CREATED_AT, encode_tu(created_at)), (INVOICE_NODE_ID, public_key_of(node_secret)),
               (HELD_HTLC_AVAILABLE_PATHS, b"".join(p.to_bytes() for p in held_htlc_available_paths))]
    if relative_expiry is not None:
        records.append((INVOICE_RELATIVE_EXPIRY, encode_tu(relative_expiry)))
    if features:
        records.append((INVOICE_FEATURES, features))
    records.sort(key=lambda r: r[0])  # BOLT 1: TLV records in ascending order
    unsigned = encode_tlv_stream(records)
    signature = sign_merkle_root(MESSAGE_NAME, merkle_root(unsigned), node_secret)
    return StaticInvoice.from_bytes(encode_tlv_stream([*records, (SIGNATURE, signature)]))
