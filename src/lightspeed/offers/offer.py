"""Offers (``lno``): the value object, the reader's rules and the writer's.

An offer is unsigned: its fields are copied into every invoice request and
invoice, where the signatures cover them. The same :class:`Offer` holds the
offer fields mirrored inside an invoice request or invoice (which need not form a
valid offer: a refund has no ``offer_issuer_id``), so parsing the fields
(:func:`parse_offer_fields`) is separate from the offer reader's rules
(:func:`check_offer`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.field_table import (
    CHAIN_HASHES,
    PATHS,
    POINT,
    RAW,
    TU64,
    UTF8,
    Field,
    TlvMessage,
    read_fields,
    write_fields,
)
from lightspeed.offers.strings import HRP_OFFER, decode_string, encode_string
from lightspeed.offers.tlv_fields import (
    OFFER_ABSOLUTE_EXPIRY,
    OFFER_AMOUNT,
    OFFER_CHAINS,
    OFFER_CURRENCY,
    OFFER_DESCRIPTION,
    OFFER_FEATURES,
    OFFER_ISSUER,
    OFFER_ISSUER_ID,
    OFFER_METADATA,
    OFFER_PATHS,
    OFFER_QUANTITY_MAX,
    OFFER_RANGES,
    OFFER_TYPES,
    TlvRecord,
    check_features,
    check_unknown_even,
    feature_field,
    field_name,
    in_ranges,
    read_records,
    write_records,
)
from lightspeed.onion.blinding import BlindedPath

#: No offer feature bits are defined by BOLT 12 yet (an even bit is always unknown).
OFFER_KNOWN_FEATURES: frozenset[int] = frozenset()
_ISO4217 = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Offer(TlvMessage):
    """The offer fields (types 1-79 and 1000000000-1999999999); ``None`` means absent.

    ``amount`` is in ``currency`` units (ISO 4217, minor units) when ``currency`` is set,
    else in millisatoshi (see :attr:`amount_msat`). ``features`` keeps the exact bytes
    (so a non-minimal encoding re-encodes identically); :attr:`feature_bits` interprets them.
    ``unknown_records`` are odd fields this code does not know, kept for the round trip
    and for the invoice request that must copy them.
    """

    chains: tuple[bytes, ...] | None = None
    metadata: bytes | None = None
    currency: str | None = None
    amount: int | None = None
    description: str | None = None
    features: bytes | None = None
    absolute_expiry: int | None = None
    paths: tuple[BlindedPath, ...] | None = None
    issuer: str | None = None
    quantity_max: int | None = None
    issuer_id: bytes | None = None
    unknown_records: tuple[tuple[int, bytes], ...] = ()

    @property
    def amount_msat(self) -> int | None:
        """The amount in millisatoshi, or ``None`` when absent or in a fiat currency."""
        return self.amount if self.currency is None else None

    @property
    def chain_hashes(self) -> tuple[bytes, ...]:
        """The chains the offer is valid for (BOLT #12: absent `offer_chains` implies bitcoin)."""
        return self.chains if self.chains is not None else (BITCOIN.chain_hash,)

    @property
    def is_offer_response(self) -> bool:
        """True when the fields come from an offer (an invoice request without them is a refund)."""
        return self.issuer_id is not None or self.paths is not None

    def is_expired(self, now: int) -> bool:
        """BOLT #12: if the current time is after `offer_absolute_expiry`: MUST NOT respond."""
        return self.absolute_expiry is not None and now > self.absolute_expiry

    def records(self) -> list[tuple[int, bytes]]:
        """The TLV records of the offer fields (unsorted; the stream writer sorts)."""
        return list(self.unknown_records) + write_fields(self, OFFER_FIELDS)

    def to_tlv(self) -> bytes:
        return write_records(self.records())

    def encode(self) -> str:
        """The ``lno1...`` string."""
        return encode_string(HRP_OFFER, self.to_tlv())


#: The offer fields, in type order (BOLT #12 "TLV Fields for Offers").
OFFER_FIELDS: tuple[Field, ...] = (
    Field(OFFER_CHAINS, "chains", CHAIN_HASHES),
    Field(OFFER_METADATA, "metadata", RAW),
    Field(OFFER_CURRENCY, "currency", UTF8),
    Field(OFFER_AMOUNT, "amount", TU64),
    Field(OFFER_DESCRIPTION, "description", UTF8),
    Field(OFFER_FEATURES, "features", RAW),
    Field(OFFER_ABSOLUTE_EXPIRY, "absolute_expiry", TU64),
    Field(OFFER_PATHS, "paths", PATHS),
    Field(OFFER_ISSUER, "issuer", UTF8),
    Field(OFFER_QUANTITY_MAX, "quantity_max", TU64),
    Field(OFFER_ISSUER_ID, "issuer_id", POINT),
)


def parse_offer_fields(records: Iterable[TlvRecord]) -> Offer:
    """Read the offer-range records (others are ignored) into an :class:`Offer`, field by field."""
    values, unknown = read_fields(records, OFFER_FIELDS, skip=lambda t: not in_ranges(t, OFFER_RANGES))
    return Offer(unknown_records=unknown, **values)


def check_offer(offer: Offer) -> None:
    """The reader's rules for an offer that need no context (time and chains are the caller's:
    :func:`check_offer_usable`). Raises :class:`DecodeError` naming the field."""
    # BOLT #12 (Rationale): An empty `offer_chains` (present but with zero entries) is
    # explicitly invalid because it would make invoice requests impossible.
    if offer.chains is not None and not offer.chains:
        raise DecodeError("offer_chains", "present but lists no chain")
    # BOLT #12: if `offer_features` contains unknown _even_ bits that are non-zero: MUST NOT
    # respond to the offer. (Unknown _odd_ bits: MUST ignore the bit.)
    check_features(offer.features or b"", OFFER_KNOWN_FEATURES, "offer_features")
    # BOLT #12: if `offer_amount` is set and `offer_description` is not set: MUST NOT respond.
    if offer.amount is not None and offer.description is None:
        raise DecodeError("offer_description", "required when offer_amount is set")
    # BOLT #12: if `offer_amount` is set and is not greater than zero: MUST NOT respond.
    if offer.amount is not None and offer.amount <= 0:
        raise DecodeError("offer_amount", "must be greater than zero")
    # BOLT #12: if `offer_currency` is set and `offer_amount` is not set: MUST NOT respond.
    if offer.currency is not None and offer.amount is None:
        raise DecodeError("offer_currency", "set without offer_amount")
    # BOLT #12: if neither `offer_issuer_id` nor `offer_paths` are set: MUST NOT respond.
    if offer.issuer_id is None and offer.paths is None:
        raise DecodeError("offer_issuer_id", "neither offer_issuer_id nor offer_paths is set")
    # A present but empty `offer_paths` leaves no way to reach an offer without an issuer id
    # (the writer "MUST include `offer_paths` containing one or more paths").
    if offer.paths is not None and not offer.paths and offer.issuer_id is None:
        raise DecodeError("offer_paths", "lists no path and offer_issuer_id is not set")


def offer_from_records(records: Sequence[TlvRecord]) -> Offer:
    """Apply every reader rule of an offer to a parsed TLV stream."""
    # BOLT #12: if the offer contains any TLV fields outside the inclusive ranges: 1 to 79 and
    # 1000000000 to 1999999999: MUST NOT respond to the offer.
    for record in records:
        if not in_ranges(record.type, OFFER_RANGES):
            raise DecodeError(field_name(record.type), "outside the offer ranges 1-79 and 1000000000-1999999999")
    check_unknown_even(records, OFFER_TYPES)
    offer = parse_offer_fields(records)
    check_offer(offer)
    return offer


def offer_from_tlv(stream: bytes) -> Offer:
    return offer_from_records(read_records(stream))


def decode_offer(text: str) -> Offer:
    """Decode and check an ``lno1...`` string (``+`` continuations and upper case allowed)."""
    _, stream = decode_string(text, HRP_OFFER)
    return offer_from_tlv(stream)


def check_offer_usable(offer: Offer, *, now: int, accepted_chains: Collection[bytes]) -> None:
    """The rules that depend on the reader: its clock and the chains it pays on.

    BOLT #12: if `offer_chains` is not set: if the node does not accept bitcoin invoices:
    MUST NOT respond; otherwise: if the node does not accept invoices for at least one of
    the `chains`: MUST NOT respond. If the current time is after `offer_absolute_expiry`:
    MUST NOT respond to the offer.
    """
    if not any(chain in accepted_chains for chain in offer.chain_hashes):
        raise DecodeError("offer_chains", "none of the offer's chains is supported")
    if offer.is_expired(now):
        raise DecodeError("offer_absolute_expiry", f"the offer expired at {offer.absolute_expiry}")


def build_offer(
    *,
    issuer_id: bytes | None = None,
    paths: Sequence[BlindedPath] | None = None,
    description: str | None = None,
    amount_msat: int | None = None,
    currency: str | None = None,
    amount: int | None = None,
    chains: Sequence[bytes] | None = None,
    metadata: bytes | None = None,
    features: Iterable[int] | bytes | None = None,
    absolute_expiry: int | None = None,
    issuer: str | None = None,
    quantity_max: int | None = None,
    unknown_records: Sequence[tuple[int, bytes]] = (),
) -> Offer:
    """Make an offer, enforcing the writer's rules (violations raise :class:`UsageError`).

    Give ``amount_msat`` for a bitcoin amount, or ``currency`` and ``amount`` (minor units)
    for a fiat one, or neither for "any amount". ``quantity_max`` is ``None`` for one
    item per invoice, ``0`` for an unlimited quantity, else the maximum.
    """
    if amount_msat is not None and (currency is not None or amount is not None):
        raise UsageError("give amount_msat, or currency and amount, not both")
    if amount is not None and currency is None:
        raise UsageError("amount needs a currency (use amount_msat for millisatoshi)")
    value = amount_msat if amount_msat is not None else amount
    if value is not None:
        # BOLT #12: MUST set `offer_amount` greater than zero.
        if value <= 0:
            raise UsageError("offer_amount must be greater than zero")
        # BOLT #12: MUST set `offer_description` to a complete description of the purpose
        # of the payment (when an amount is required).
        if description is None:
            raise UsageError("an offer with an amount needs a description")
    if currency is not None:
        # BOLT #12: MUST specify `offer_currency` `iso4217` as an ISO 4217 three-letter code.
        if not _ISO4217.fullmatch(currency):
            raise UsageError(f"offer_currency {currency!r} is not an ISO 4217 three-letter code")
        if value is None:
            # BOLT #12: otherwise: MUST NOT set `offer_amount` / MUST NOT set `offer_currency`.
            raise UsageError("offer_currency needs an amount")
    chain_tuple: tuple[bytes, ...] | None = None
    if chains is not None:
        if not chains:
            raise UsageError("offer_chains must list at least one chain")
        # BOLT #12: if the chain for the invoice is not solely bitcoin: MUST specify
        # `offer_chains`; otherwise: SHOULD omit `offer_chains`.
        chain_tuple = None if list(chains) == [BITCOIN.chain_hash] else tuple(chains)
    path_tuple = tuple(paths) if paths is not None else None
    if path_tuple is not None and not path_tuple:
        raise UsageError("offer_paths must contain one or more paths")
    # BOLT #12: if it includes `offer_paths`: MAY set `offer_issuer_id`; otherwise: MUST set
    # `offer_issuer_id` to the node's public key to request the invoice from.
    if path_tuple is None and issuer_id is None:
        raise UsageError("an offer needs offer_issuer_id or offer_paths")
    # BOLT #12: if the maximum quantity is known: MUST NOT set `offer_quantity_max` to 0
    # (0 means unknown or unlimited); a negative quantity is not encodable.
    if quantity_max is not None and quantity_max < 0:
        raise UsageError("offer_quantity_max must be 0 (unlimited) or positive")
    feature_bytes = feature_field(features)
    for tlv_type, _ in unknown_records:
        # BOLT #12: MUST NOT set any TLV fields outside the inclusive ranges: 1 to 79 and
        # 1000000000 to 1999999999.
        if not in_ranges(tlv_type, OFFER_RANGES) or tlv_type in OFFER_TYPES:
            raise UsageError(f"extra record type {tlv_type} is not a free offer-range type")
    offer = Offer(
        chains=chain_tuple, metadata=metadata, currency=currency, amount=value, description=description,
        features=feature_bytes, absolute_expiry=absolute_expiry, paths=path_tuple, issuer=issuer,
        quantity_max=quantity_max, issuer_id=issuer_id, unknown_records=tuple(unknown_records),
    )
    offer.to_tlv()  # every field encodes (points on the curve, integers in range)
    return offer
