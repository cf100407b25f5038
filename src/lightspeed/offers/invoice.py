"""Invoices (``lni``): the request's fields copied, the payment details added, signed by the payee.

:func:`respond_to_invoice_request` is the payee's writer (for an offer's request or
a refund); :func:`decode_invoice` applies every reader rule that needs no context;
:func:`check_invoice_for_request` the ones a payer applies with the request it
sent, its clock and its chains.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.field_table import (
    BLINDEDPAY,
    FALLBACKS,
    PATHS,
    POINT,
    RAW,
    SHA256,
    SIGNATURE_64,
    TU32,
    TU64,
    Field,
    TlvMessage,
    read_fields,
    write_fields,
)
from lightspeed.offers.invoice_request import (
    InvoiceRequest,
    expected_amount_msat,
    parse_invoice_request_fields,
)
from lightspeed.offers.merkle import merkle_root_of_records
from lightspeed.offers.sign import public_key_of, sign_merkle_root, verify_merkle_root
from lightspeed.offers.strings import HRP_INVOICE, decode_string, encode_string
from lightspeed.offers.tlv_fields import (
    INVOICE_AMOUNT,
    INVOICE_BLINDEDPAY,
    INVOICE_CREATED_AT,
    INVOICE_FALLBACKS,
    INVOICE_FEATURES,
    INVOICE_KNOWN_FEATURES,
    INVOICE_NODE_ID,
    INVOICE_PATHS,
    INVOICE_PAYMENT_HASH,
    INVOICE_RELATIVE_EXPIRY,
    INVOICE_TYPES,
    INVREQ_RANGES,
    INVREQ_TYPES,
    OFFER_TYPES,
    SIGNATURE,
    BlindedPayInfo,
    FallbackAddress,
    TlvRecord,
    check_features,
    check_unknown_even,
    feature_field,
    in_ranges,
    read_records,
    write_records,
)
from lightspeed.onion.blinding import BlindedPath

MESSAGE_NAME = "invoice"
#: BOLT #12: if the expiry for accepting payment is not 7200 seconds after `invoice_created_at`:
#: MUST set `invoice_relative_expiry`.
DEFAULT_RELATIVE_EXPIRY = 7200


@dataclass(frozen=True)
class Invoice(TlvMessage):
    """A BOLT 12 ``invoice``. ``request`` holds the copied offer and invoice request fields
    (types 0-159 and 1000000000-2999999999, no signature); the rest are the invoice's own.
    ``unknown_records`` are unknown odd records outside the request's ranges."""

    request: InvoiceRequest
    paths: tuple[BlindedPath, ...]
    blindedpay: tuple[BlindedPayInfo, ...]
    created_at: int
    payment_hash: bytes
    amount_msat: int
    node_id: bytes
    relative_expiry: int | None = None
    fallbacks: tuple[FallbackAddress, ...] | None = None
    features: bytes | None = None
    unknown_records: tuple[tuple[int, bytes], ...] = ()
    signature: bytes | None = None

    @property
    def expires_at(self) -> int:
        return self.created_at + (self.relative_expiry if self.relative_expiry is not None
                                  else DEFAULT_RELATIVE_EXPIRY)

    def is_expired(self, now: int) -> bool:
        """BOLT #12: MUST reject the invoice if the current time since 1970-01-01 UTC is greater
        than `invoice_created_at` plus `seconds_from_creation` (7200 when absent)."""
        return now > self.expires_at

    @property
    def usable_paths(self) -> tuple[tuple[BlindedPath, BlindedPayInfo], ...]:
        """BOLT #12: MUST NOT use the corresponding `invoice_paths`.`path` if `payinfo`.`features`
        has any unknown even bits set. In the invoice's order of preference."""
        return tuple((p, i) for p, i in zip(self.paths, self.blindedpay, strict=False) if i.usable)

    @property
    def usable_fallbacks(self) -> tuple[FallbackAddress, ...]:
        """The fallbacks a bitcoin reader may use (the others MUST be ignored)."""
        return tuple(f for f in self.fallbacks or () if f.usable)

    def records(self) -> list[tuple[int, bytes]]:
        return self.request.records(signatures=False) + list(self.unknown_records) + write_fields(self, INVOICE_FIELDS)

    def to_tlv(self) -> bytes:
        return write_records(self.records())

    def encode(self) -> str:
        """The ``lni1...`` string."""
        return encode_string(HRP_INVOICE, self.to_tlv())

    @property
    def merkle_root(self) -> bytes:
        return merkle_root_of_records(read_records(self.to_tlv()))

    def signature_valid(self) -> bool:
        """Whether ``signature`` verifies with ``invoice_node_id``."""
        if self.signature is None:
            return False
        return verify_merkle_root(MESSAGE_NAME, self.merkle_root, self.signature, self.node_id)

    def sign(self, node_key: bytes, *, aux_rand: bytes | None = None) -> Invoice:
        """BOLT #12: MUST set `sig` to the signature using `invoice_node_id`."""
        if public_key_of(node_key) != self.node_id:
            raise UsageError("node_key is not the secret of invoice_node_id")
        unsigned = replace(self, signature=None)
        root = merkle_root_of_records(read_records(unsigned.to_tlv()))
        return replace(unsigned, signature=sign_merkle_root(MESSAGE_NAME, root, node_key, aux_rand=aux_rand))


#: The invoice's own fields and its signature, in type order.
INVOICE_FIELDS: tuple[Field, ...] = (
    Field(INVOICE_PATHS, "paths", PATHS),
    Field(INVOICE_BLINDEDPAY, "blindedpay", BLINDEDPAY),
    Field(INVOICE_CREATED_AT, "created_at", TU64),
    Field(INVOICE_RELATIVE_EXPIRY, "relative_expiry", TU32),
    Field(INVOICE_PAYMENT_HASH, "payment_hash", SHA256),
    Field(INVOICE_AMOUNT, "amount_msat", TU64),
    Field(INVOICE_FALLBACKS, "fallbacks", FALLBACKS),
    Field(INVOICE_FEATURES, "features", RAW),
    Field(INVOICE_NODE_ID, "node_id", POINT),
    Field(SIGNATURE, "signature", SIGNATURE_64),
)


def _require(values: dict[str, object], key: str, name: str) -> None:
    if key not in values:
        raise DecodeError(name, "missing")


def parse_invoice(records: Sequence[TlvRecord]) -> Invoice:
    """Read the records of an invoice; the four fields every invoice has are required here.

    BOLT #12: MUST reject the invoice if `invoice_amount` is not present; ... if
    `invoice_created_at` is not present; ... if `invoice_payment_hash` is not present; ...
    if `invoice_node_id` is not present.
    """
    request = parse_invoice_request_fields(r for r in records if in_ranges(r.type, INVREQ_RANGES))
    values, unknown = read_fields(records, INVOICE_FIELDS, skip=lambda t: in_ranges(t, INVREQ_RANGES))
    _require(values, "amount_msat", "invoice_amount")
    _require(values, "created_at", "invoice_created_at")
    _require(values, "payment_hash", "invoice_payment_hash")
    _require(values, "node_id", "invoice_node_id")
    # BOLT #12: MUST reject the invoice if `invoice_paths` is not present or is empty.
    if not values.get("paths"):
        raise DecodeError("invoice_paths", "missing or empty")
    # BOLT #12: MUST reject the invoice if `invoice_blindedpay` is not present.
    _require(values, "blindedpay", "invoice_blindedpay")
    return Invoice(request=request, unknown_records=unknown, **values)


def check_invoice(invoice: Invoice) -> None:
    """The reader's rules that need neither the request nor a clock (signature apart)."""
    # BOLT #12: if `invoice_features` contains unknown _even_ bits that are non-zero: MUST
    # reject the invoice. (Unknown _odd_ bits: MUST ignore the bit.)
    check_features(invoice.features or b"", INVOICE_KNOWN_FEATURES, "invoice_features")
    # BOLT #12: MUST reject the invoice if `invoice_blindedpay` does not contain exactly one
    # `blinded_payinfo` per `invoice_paths`.`blinded_path`.
    if len(invoice.blindedpay) != len(invoice.paths):
        raise DecodeError("invoice_blindedpay",
                          f"{len(invoice.blindedpay)} payinfo for {len(invoice.paths)} paths")
    # BOLT #12: MUST reject the invoice if this leaves no usable paths.
    if not invoice.usable_paths:
        raise DecodeError("invoice_blindedpay", "every path's payinfo has an unknown even feature bit")
    offer = invoice.request.offer
    # BOLT #12: if `offer_issuer_id` is present (invoice_request for an offer): MUST reject the
    # invoice if `invoice_node_id` is not equal to `offer_issuer_id`.
    if offer.issuer_id is not None and invoice.node_id != offer.issuer_id:
        raise DecodeError("invoice_node_id", "is not offer_issuer_id")
    # BOLT #12: if `invreq_amount` is present: MUST reject the invoice if `invoice_amount` is not
    # equal to `invreq_amount`.
    if invoice.request.amount_msat is not None and invoice.amount_msat != invoice.request.amount_msat:
        raise DecodeError("invoice_amount", f"{invoice.amount_msat} is not invreq_amount "
                                            f"{invoice.request.amount_msat}")


def invoice_from_records(records: Sequence[TlvRecord], *, check_signature: bool = True) -> Invoice:
    check_unknown_even(records, OFFER_TYPES | INVREQ_TYPES | INVOICE_TYPES | {SIGNATURE})
    invoice = parse_invoice(records)
    check_invoice(invoice)
    # BOLT #12: MUST reject the invoice if `signature` is not a valid signature using
    # `invoice_node_id` as described in Signature Calculation.
    if check_signature:
        if invoice.signature is None:
            raise DecodeError("signature", "missing")
        root = merkle_root_of_records(records)
        if not verify_merkle_root(MESSAGE_NAME, root, invoice.signature, invoice.node_id):
            raise DecodeError("signature", "does not verify with invoice_node_id")
    return invoice


def invoice_from_tlv(stream: bytes, *, check_signature: bool = True) -> Invoice:
    return invoice_from_records(read_records(stream), check_signature=check_signature)


def decode_invoice(text: str, *, check_signature: bool = True) -> Invoice:
    """Decode and check an ``lni1...`` string."""
    _, stream = decode_string(text, HRP_INVOICE)
    return invoice_from_tlv(stream, check_signature=check_signature)


def check_invoice_for_request(
    invoice: Invoice, invreq: InvoiceRequest, *, now: int, accepted_chains: Collection[bytes],
    final_blinded_node_ids: Iterable[bytes] = (),
) -> None:
    """The payer's checks of an invoice against the request it sent.

    ``final_blinded_node_ids``: the last ``blinded_node_id`` of the offer path the request
    went through (needed when the offer had ``offer_paths`` and no ``offer_issuer_id``).
    """
    # BOLT #12: MUST reject the invoice if all fields in ranges 0 to 159 and 1000000000 to
    # 2999999999 (inclusive) do not exactly match the invoice request.
    if invoice.request.to_tlv() != invreq.without_signatures().to_tlv():
        raise DecodeError("invoice_request", "the invoice's request fields do not match the request")
    offer = invreq.offer
    if offer.issuer_id is None and offer.paths is not None and invoice.node_id not in set(final_blinded_node_ids):
        # BOLT #12: otherwise, if `offer_paths` is present: MUST reject the invoice if
        # `invoice_node_id` is not equal to the final `blinded_node_id` it sent the request to.
        raise DecodeError("invoice_node_id", "is not the final blinded_node_id of the offer path used")
    # BOLT #12: if `invreq_chain` is not present: MUST reject the invoice if bitcoin is not a
    # supported chain; otherwise: MUST reject the invoice if `invreq_chain`.`chain` is not a
    # supported chain.
    if invoice.request.chain_hash not in accepted_chains:
        raise DecodeError("invreq_chain", "not a supported chain")
    if invoice.is_expired(now):
        raise DecodeError("invoice_relative_expiry", f"the invoice expired at {invoice.expires_at}")


def respond_to_invoice_request(
    invreq: InvoiceRequest,
    *,
    node_key: bytes,
    payment_hash: bytes,
    created_at: int,
    paths: Sequence[BlindedPath],
    blindedpay: Sequence[BlindedPayInfo],
    amount_msat: int | None = None,
    relative_expiry: int | None = None,
    features: Iterable[int] | bytes | None = None,
    fallbacks: Sequence[FallbackAddress] | None = None,
    convert: Callable[[str, int], int] | None = None,
    unknown_records: Sequence[tuple[int, bytes]] = (),
    aux_rand: bytes | None = None,
) -> Invoice:
    """The payee's signed invoice for a (checked) invoice request or refund.

    ``node_key`` signs: the secret of ``offer_issuer_id`` when the offer has one, else of
    the final ``blinded_node_id`` of the offer path the request came through, or (refund)
    any key the payee will be known by. ``created_at`` is the caller's clock; ``convert``
    turns an ``offer_currency`` amount into msat when the request has no ``invreq_amount``.
    """
    node_id = public_key_of(node_key)
    offer = invreq.offer
    # BOLT #12: if `offer_issuer_id` is present: MUST set `invoice_node_id` to the
    # `offer_issuer_id`; otherwise, if `offer_paths` is present: MUST set `invoice_node_id`
    # to the final `blinded_node_id` on the path it received the invoice request.
    if offer.issuer_id is not None and node_id != offer.issuer_id:
        raise UsageError("node_key is not the secret of offer_issuer_id")
    amount = _invoice_amount(invreq, amount_msat, convert)
    # BOLT #12: MUST include `invoice_paths` containing one or more paths to the node; MUST
    # include `invoice_blindedpay` with exactly one `blinded_payinfo` for each `blinded_path`.
    if not paths or len(paths) != len(blindedpay):
        raise UsageError("give one or more paths and exactly one blinded_payinfo per path")
    if len(payment_hash) != 32:
        raise UsageError("invoice_payment_hash is 32 bytes")
    # BOLT #12: for the bitcoin chain, it MUST set each `fallback_address` with `version` as a
    # valid witness version and `address` as a valid witness program.
    if fallbacks is not None and not all(f.usable for f in fallbacks):
        raise UsageError("every fallback_address must be a valid witness version and program")
    for tlv_type, _ in unknown_records:
        if in_ranges(tlv_type, INVREQ_RANGES) or tlv_type in INVOICE_TYPES or 240 <= tlv_type <= 1000:
            raise UsageError(f"extra record type {tlv_type} is not a free invoice type")
    invoice = Invoice(
        # BOLT #12: MUST copy all non-signature fields from the invoice request (including
        # unknown fields).
        request=invreq.without_signatures(),
        paths=tuple(paths), blindedpay=tuple(blindedpay),
        # BOLT #12: MUST set `invoice_created_at` to the number of seconds since Midnight 1
        # January 1970, UTC when the invoice was created.
        created_at=created_at, payment_hash=payment_hash, amount_msat=amount, node_id=node_id,
        relative_expiry=relative_expiry, fallbacks=tuple(fallbacks) if fallbacks is not None else None,
        features=feature_field(features), unknown_records=tuple(unknown_records),
    )
    return invoice.sign(node_key, aux_rand=aux_rand)


def _invoice_amount(invreq: InvoiceRequest, amount_msat: int | None,
                    convert: Callable[[str, int], int] | None) -> int:
    if invreq.amount_msat is not None:
        # BOLT #12: if `invreq_amount` is present: MUST set `invoice_amount` to `invreq_amount`.
        if amount_msat is not None and amount_msat != invreq.amount_msat:
            raise UsageError("invoice_amount must equal invreq_amount")
        return invreq.amount_msat
    # BOLT #12: otherwise: MUST set `invoice_amount` to the *expected amount*.
    expected = expected_amount_msat(invreq, convert)
    if expected is None:
        if amount_msat is None:
            raise UsageError("the expected amount is unknown: give amount_msat or convert")
        return amount_msat
    if amount_msat is not None and amount_msat != expected:
        raise UsageError(f"invoice_amount must be the expected amount {expected}")
    return expected
