"""Invoice requests (``lnr``): in response to an offer (signed), or a refund (no offer, unsigned).

BOLT 12 has two uses of one message. A payer answering an offer copies every offer
field, adds its ``invreq_*`` fields and signs with a transient ``invreq_payer_id``
(:func:`request_invoice`). A payee that owes money publishes a request without
offer fields, an "offer to send money" (:func:`build_refund`); it carries no
signature. :func:`decode_invoice_request` applies every reader rule that needs no
context; :func:`check_invoice_request_for_offer` the ones an offer's issuer applies
with its own offer, clock and chains.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.field_table import (
    BIP353_NAME,
    PATHS,
    POINT,
    RAW,
    SHA256,
    SIGNATURE_64,
    TU64,
    UTF8,
    Field,
    TlvMessage,
    read_fields,
    write_fields,
)
from lightspeed.offers.merkle import merkle_root_of_records
from lightspeed.offers.offer import Offer, check_offer, parse_offer_fields
from lightspeed.offers.sign import public_key_of, sign_merkle_root, verify_merkle_root
from lightspeed.offers.strings import HRP_INVOICE_REQUEST, decode_string, encode_string
from lightspeed.offers.tlv_fields import (
    INVREQ_AMOUNT,
    INVREQ_BIP_353_NAME,
    INVREQ_CHAIN,
    INVREQ_FEATURES,
    INVREQ_METADATA,
    INVREQ_PATHS,
    INVREQ_PAYER_ID,
    INVREQ_PAYER_NOTE,
    INVREQ_QUANTITY,
    INVREQ_RANGES,
    INVREQ_TYPES,
    OFFER_RANGES,
    OFFER_TYPES,
    SIGNATURE,
    Bip353Name,
    TlvRecord,
    check_features,
    check_point,
    check_unknown_even,
    feature_field,
    field_name,
    in_ranges,
    is_signature_type,
    read_records,
    write_records,
)
from lightspeed.onion.blinding import BlindedPath

MESSAGE_NAME = "invoice_request"
#: No invoice request feature bits are defined by BOLT 12 yet.
INVREQ_KNOWN_FEATURES: frozenset[int] = frozenset()


@dataclass(frozen=True)
class InvoiceRequest(TlvMessage):
    """An ``invoice_request``: the mirrored ``offer`` fields plus the ``invreq_*`` fields.

    ``unknown_records`` holds unknown odd records outside the offer ranges (invreq range
    and signature range); ``signature`` is the BIP-340 ``signature`` (240) or ``None``.
    Inside an :class:`~lightspeed.offers.invoice.Invoice` the request has no signature.
    """

    offer: Offer = field(default_factory=Offer)
    metadata: bytes | None = None
    chain: bytes | None = None
    amount_msat: int | None = None
    features: bytes | None = None
    quantity: int | None = None
    payer_id: bytes | None = None
    payer_note: str | None = None
    paths: tuple[BlindedPath, ...] | None = None
    bip_353_name: Bip353Name | None = None
    unknown_records: tuple[tuple[int, bytes], ...] = ()
    signature: bytes | None = None

    @property
    def is_refund(self) -> bool:
        """BOLT #12: no `offer_issuer_id` or `offer_paths`: not a response to an offer."""
        return not self.offer.is_offer_response

    @property
    def chain_hash(self) -> bytes:
        """`invreq_chain`, or bitcoin when absent."""
        return self.chain if self.chain is not None else BITCOIN.chain_hash

    def records(self, *, signatures: bool = True) -> list[tuple[int, bytes]]:
        """All records; ``signatures=False`` leaves out the signature range (240-1000)."""
        out = self.offer.records()
        out += [(t, v) for t, v in self.unknown_records if signatures or not is_signature_type(t)]
        out += write_fields(self, INVREQ_FIELDS)
        if self.signature is not None and signatures:
            out.append((SIGNATURE, SIGNATURE_64.write(self.signature, "signature")))
        return out

    def to_tlv(self) -> bytes:
        return write_records(self.records())

    def encode(self) -> str:
        """The ``lnr1...`` string."""
        return encode_string(HRP_INVOICE_REQUEST, self.to_tlv())

    @property
    def merkle_root(self) -> bytes:
        return merkle_root_of_records(read_records(self.to_tlv()))

    def signature_valid(self) -> bool:
        """Whether ``signature`` verifies with ``invreq_payer_id`` (False when either is absent)."""
        if self.signature is None or self.payer_id is None:
            return False
        return verify_merkle_root(MESSAGE_NAME, self.merkle_root, self.signature, self.payer_id)

    def without_signatures(self) -> InvoiceRequest:
        """The non-signature fields: what an invoice copies (BOLT #12: MUST copy all
        non-signature fields from the invoice request (including unknown fields))."""
        kept = tuple((t, v) for t, v in self.unknown_records if not is_signature_type(t))
        return replace(self, signature=None, unknown_records=kept)

    def sign(self, payer_key: bytes, *, aux_rand: bytes | None = None) -> InvoiceRequest:
        """Sign with the secret of ``invreq_payer_id`` (BOLT #12: MUST set `signature`.`sig`
        as detailed in Signature Calculation using the `invreq_payer_id`)."""
        if self.payer_id is None or public_key_of(payer_key) != self.payer_id:
            raise UsageError("payer_key is not the secret of invreq_payer_id")
        unsigned = replace(self, signature=None)
        root = merkle_root_of_records(read_records(unsigned.to_tlv()))
        return replace(unsigned, signature=sign_merkle_root(MESSAGE_NAME, root, payer_key, aux_rand=aux_rand))


#: The invoice request's own fields and its signature, in type order.
INVREQ_FIELDS: tuple[Field, ...] = (
    Field(INVREQ_METADATA, "metadata", RAW),
    Field(INVREQ_CHAIN, "chain", SHA256),
    Field(INVREQ_AMOUNT, "amount_msat", TU64),
    Field(INVREQ_FEATURES, "features", RAW),
    Field(INVREQ_QUANTITY, "quantity", TU64),
    Field(INVREQ_PAYER_ID, "payer_id", POINT),
    Field(INVREQ_PAYER_NOTE, "payer_note", UTF8),
    Field(INVREQ_PATHS, "paths", PATHS),
    Field(INVREQ_BIP_353_NAME, "bip_353_name", BIP353_NAME),
)
_SIGNATURE_FIELD = Field(SIGNATURE, "signature", SIGNATURE_64)


def parse_invoice_request_fields(records: Iterable[TlvRecord]) -> InvoiceRequest:
    """Read the offer and invoice request records field by field (no message rules)."""
    records = list(records)
    values, unknown = read_fields(records, (*INVREQ_FIELDS, _SIGNATURE_FIELD),
                                  skip=lambda t: in_ranges(t, OFFER_RANGES))
    return InvoiceRequest(offer=parse_offer_fields(records), unknown_records=unknown, **values)


def check_invoice_request(invreq: InvoiceRequest) -> None:
    """The reader's rules that need neither the offer nor a clock (signature apart)."""
    # BOLT #12: MUST reject the invoice request if `invreq_payer_id` or `invreq_metadata` are
    # not present.
    if invreq.payer_id is None:
        raise DecodeError("invreq_payer_id", "missing")
    if invreq.metadata is None:
        raise DecodeError("invreq_metadata", "missing")
    # BOLT #12: if `invreq_features` contains unknown _even_ bits that are non-zero: MUST reject
    # the invoice request. (Unknown _odd_ bits: MUST ignore the bit.)
    check_features(invreq.features or b"", INVREQ_KNOWN_FEATURES, "invreq_features")
    offer = invreq.offer
    if offer.is_offer_response:
        # BOLT #12: MUST reject the invoice request if the offer fields do not exactly match a
        # valid, unexpired offer (an invalid offer can match none; the match is the issuer's:
        # check_invoice_request_for_offer).
        check_offer(offer)
        if offer.quantity_max is not None:
            # BOLT #12: if `offer_quantity_max` is present: MUST reject the invoice request if
            # there is no `invreq_quantity` field; if `offer_quantity_max` is non-zero: MUST
            # reject the invoice request if `invreq_quantity` is zero, OR greater than
            # `offer_quantity_max`.
            if invreq.quantity is None:
                raise DecodeError("invreq_quantity", "required by offer_quantity_max")
            if offer.quantity_max and not 0 < invreq.quantity <= offer.quantity_max:
                raise DecodeError("invreq_quantity", f"{invreq.quantity} is not 1 to {offer.quantity_max}")
            if invreq.quantity == 0:
                raise DecodeError("invreq_quantity", "must be greater than zero")
        elif invreq.quantity is not None:
            # BOLT #12: otherwise: MUST reject the invoice request if there is an
            # `invreq_quantity` field.
            raise DecodeError("invreq_quantity", "set but the offer has no offer_quantity_max")
        if offer.amount is None:
            # BOLT #12: otherwise (no `offer_amount`): MUST reject the invoice request if it
            # does not contain `invreq_amount`.
            if invreq.amount_msat is None:
                raise DecodeError("invreq_amount", "required when the offer has no amount")
        elif offer.currency is None and invreq.amount_msat is not None:
            # BOLT #12: if `invreq_amount` is present: MUST reject the invoice request if
            # `invreq_amount`.`msat` is less than the *expected amount*. (In another currency
            # the expected amount needs an exchange rate: check_invoice_request_for_offer.)
            expected = expected_amount_msat(invreq)
            if expected is not None and invreq.amount_msat < expected:
                raise DecodeError("invreq_amount", f"{invreq.amount_msat} msat is below the expected {expected}")
    else:
        # BOLT #12: otherwise (no `offer_issuer_id` or `offer_paths`, not a response to our
        # offer): MUST reject the invoice request if any of the following are present:
        # `offer_chains`, `offer_features` or `offer_quantity_max`.
        for present, name in ((offer.chains, "offer_chains"), (offer.features, "offer_features"),
                              (offer.quantity_max, "offer_quantity_max")):
            if present is not None:
                raise DecodeError(name, "not allowed in an invoice request without an offer")
        # BOLT #12: MUST reject the invoice request if `invreq_amount` is not present.
        if invreq.amount_msat is None:
            raise DecodeError("invreq_amount", "required in an invoice request without an offer")


def invoice_request_from_records(records: Sequence[TlvRecord], *, check_signature: bool = True) -> InvoiceRequest:
    """Apply every context-free reader rule to a parsed TLV stream."""
    for record in records:
        # BOLT #12: MUST reject the invoice request if any non-signature TLV fields are outside
        # the inclusive ranges: 0 to 159 and 1000000000 to 2999999999.
        if not is_signature_type(record.type) and not in_ranges(record.type, INVREQ_RANGES):
            raise DecodeError(field_name(record.type), "outside the ranges 0-159 and 1000000000-2999999999")
    check_unknown_even(records, OFFER_TYPES | INVREQ_TYPES | {SIGNATURE})
    invreq = parse_invoice_request_fields(records)
    check_invoice_request(invreq)
    if check_signature:
        # BOLT #12: MUST reject the invoice request if `signature` is not correct as detailed in
        # Signature Calculation using the `invreq_payer_id`. (A request without an offer MUST
        # NOT include one; when present anyway it must still be correct.)
        if invreq.signature is None and not invreq.is_refund:
            raise DecodeError("signature", "missing")
        if invreq.signature is not None and not verify_merkle_root(
                MESSAGE_NAME, merkle_root_of_records(records), invreq.signature, invreq.payer_id or b""):
            raise DecodeError("signature", "does not verify with invreq_payer_id")
    return invreq


def invoice_request_from_tlv(stream: bytes, *, check_signature: bool = True) -> InvoiceRequest:
    return invoice_request_from_records(read_records(stream), check_signature=check_signature)


def decode_invoice_request(text: str, *, check_signature: bool = True) -> InvoiceRequest:
    """Decode and check an ``lnr1...`` string."""
    _, stream = decode_string(text, HRP_INVOICE_REQUEST)
    return invoice_request_from_tlv(stream, check_signature=check_signature)


def expected_amount_msat(invreq: InvoiceRequest, convert: Callable[[str, int], int] | None = None) -> int | None:
    """BOLT #12: the *expected amount*: `offer_amount`, converted to the chain's currency if
    `offer_currency` is set (``convert(currency, amount) -> msat``), times `invreq_quantity`
    if present. ``None`` without an offer amount, or for a currency without ``convert``."""
    offer = invreq.offer
    if offer.amount is None:
        return None
    if offer.currency is None:
        per_item = offer.amount
    elif convert is None:
        return None
    else:
        per_item = convert(offer.currency, offer.amount)
    return per_item * (invreq.quantity if invreq.quantity is not None else 1)


def check_invoice_request_for_offer(
    invreq: InvoiceRequest, offer: Offer, *, now: int, accepted_chains: Collection[bytes],
    convert: Callable[[str, int], int] | None = None,
) -> None:
    """The issuer's checks of a decoded request against the offer it made.

    BOLT #12: if `offer_issuer_id` or `offer_paths` are present (response to an offer): MUST
    reject the invoice request if the offer fields do not exactly match a valid, unexpired
    offer. If `invreq_chain` is not present: MUST reject the invoice request if bitcoin is not
    a supported chain; otherwise: MUST reject the invoice request if `invreq_chain`.`chain` is
    not a supported chain. ``convert`` turns an ``offer_currency`` amount into msat.
    """
    if invreq.offer.to_tlv() != offer.to_tlv():
        raise DecodeError("offer", "the offer fields do not match the offer")
    if offer.is_expired(now):
        raise DecodeError("offer_absolute_expiry", f"the offer expired at {offer.absolute_expiry}")
    if invreq.chain_hash not in accepted_chains:
        raise DecodeError("invreq_chain", "not a supported chain")
    expected = expected_amount_msat(invreq, convert)
    if offer.currency is not None and expected is None:
        raise UsageError("an offer in a currency needs convert() to check the amount")
    if invreq.amount_msat is not None and expected is not None and invreq.amount_msat < expected:
        raise DecodeError("invreq_amount", f"{invreq.amount_msat} msat is below the expected {expected}")


def _check_extra(unknown_records: Sequence[tuple[int, bytes]]) -> None:
    for tlv_type, _ in unknown_records:
        # BOLT #12: MUST NOT set any non-signature TLV fields outside the inclusive ranges:
        # 0 to 159 and 1000000000 to 2999999999.
        if (in_ranges(tlv_type, OFFER_RANGES) or not in_ranges(tlv_type, INVREQ_RANGES)
                or tlv_type in INVREQ_TYPES):
            raise UsageError(f"extra record type {tlv_type} is not a free invoice request type")


def request_invoice(
    offer: Offer,
    *,
    payer_key: bytes,
    metadata: bytes,
    amount_msat: int | None = None,
    quantity: int | None = None,
    chain: bytes | None = None,
    features: Iterable[int] | bytes | None = None,
    payer_note: str | None = None,
    paths: Sequence[BlindedPath] | None = None,
    bip_353_name: Bip353Name | None = None,
    unknown_records: Sequence[tuple[int, bytes]] = (),
    aux_rand: bytes | None = None,
) -> InvoiceRequest:
    """The payer's signed request for an invoice from ``offer`` (writer rules enforced).

    ``payer_key`` is a fresh transient secret (BOLT #12: MUST set `invreq_payer_id` to a
    transient public key; MUST remember the secret key); ``metadata`` unpredictable bytes
    (BOLT #12: MUST set `invreq_metadata` to an unpredictable series of bytes). Both come
    from the caller's CSPRNG: this core does no I/O.
    """
    check_offer(offer)
    if not offer.is_offer_response:
        raise UsageError("the offer has neither offer_issuer_id nor offer_paths")
    if not metadata:
        raise UsageError("invreq_metadata must be unpredictable bytes, not empty")
    if offer.chains is not None:
        # BOLT #12: if `offer_chains` is set: MUST set `invreq_chain` to one of `offer_chains`
        # unless that chain is bitcoin, in which case it SHOULD omit `invreq_chain`.
        chosen = chain if chain is not None else offer.chains[0]
        if chosen not in offer.chains:
            raise UsageError("invreq_chain must be one of offer_chains")
        chain = None if chosen == BITCOIN.chain_hash else chosen
    elif chain is not None and chain != BITCOIN.chain_hash:
        # BOLT #12: otherwise: if it sets `invreq_chain` it MUST set it to bitcoin.
        raise UsageError("the offer is for bitcoin only")
    if offer.quantity_max is not None:
        # BOLT #12: if `offer_quantity_max` is present: MUST set `invreq_quantity` to greater
        # than zero; if `offer_quantity_max` is non-zero: MUST set `invreq_quantity` less than
        # or equal to `offer_quantity_max`.
        if quantity is None or quantity <= 0 or (offer.quantity_max and quantity > offer.quantity_max):
            raise UsageError(f"invreq_quantity must be 1 to {offer.quantity_max or 'unlimited'}")
    elif quantity is not None:
        # BOLT #12: otherwise: MUST NOT set `invreq_quantity`.
        raise UsageError("the offer has no offer_quantity_max: no invreq_quantity")
    if offer.amount is None and amount_msat is None:
        # BOLT #12: if `offer_amount` is not present: MUST specify `invreq_amount`.
        raise UsageError("the offer has no amount: give amount_msat")
    draft = InvoiceRequest(
        # BOLT #12: MUST copy all fields from the offer (including unknown fields).
        offer=offer, metadata=metadata, chain=chain, amount_msat=amount_msat, features=feature_field(features),
        quantity=quantity, payer_id=public_key_of(payer_key), payer_note=payer_note,
        paths=tuple(paths) if paths is not None else None, bip_353_name=bip_353_name,
        unknown_records=tuple(unknown_records),
    )
    _check_extra(unknown_records)
    expected = expected_amount_msat(draft)
    if amount_msat is not None and expected is not None and amount_msat < expected:
        # BOLT #12: if it sets `invreq_amount`: MUST specify `invreq_amount`.`msat` as greater
        # or equal to amount expected by `offer_amount` (and `invreq_quantity`).
        raise UsageError(f"invreq_amount {amount_msat} is below the expected {expected} msat")
    return draft.sign(payer_key, aux_rand=aux_rand)


def build_refund(
    *,
    payer_id: bytes,
    metadata: bytes,
    description: str,
    amount_msat: int,
    chain: bytes | None = None,
    absolute_expiry: int | None = None,
    issuer: str | None = None,
    paths: Sequence[BlindedPath] | None = None,
    quantity: int | None = None,
    features: Iterable[int] | bytes | None = None,
    payer_note: str | None = None,
    unknown_records: Sequence[tuple[int, bytes]] = (),
) -> InvoiceRequest:
    """An invoice request not answering an offer (a refund: "send me an invoice for this").

    BOLT #12 (not responding to an offer): MUST set `offer_description`; MUST set (or not
    set) `offer_absolute_expiry` and `offer_issuer` as it would for an offer; MUST set
    `invreq_payer_id`; MUST set `invreq_paths` as it would set (or not set) `offer_paths`;
    MUST NOT include `signature`, `offer_metadata`, `offer_chains`, `offer_amount`,
    `offer_currency`, `offer_features`, `offer_quantity_max`, `offer_paths` or
    `offer_issuer_id`; MUST set `invreq_amount`.
    """
    if not metadata:
        raise UsageError("invreq_metadata must be unpredictable bytes, not empty")
    if amount_msat <= 0:
        raise UsageError("invreq_amount must be positive")
    if paths is not None and not paths:
        raise UsageError("invreq_paths must contain one or more paths")
    _check_extra(unknown_records)
    refund = InvoiceRequest(
        offer=Offer(description=description, absolute_expiry=absolute_expiry, issuer=issuer),
        metadata=metadata,
        # BOLT #12: if the chain for the invoice is not solely bitcoin: MUST specify `invreq_chain`.
        chain=None if chain == BITCOIN.chain_hash else chain,
        amount_msat=amount_msat, features=feature_field(features), quantity=quantity,
        payer_id=check_point(payer_id, "invreq_payer_id"), payer_note=payer_note,
        paths=tuple(paths) if paths is not None else None, unknown_records=tuple(unknown_records),
    )
    refund.to_tlv()
    return refund
