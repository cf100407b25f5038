"""Writing BOLT 11 invoices: tagged fields from values, following the writer rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lightspeed.bitcoin.network import BITCOIN, Network
from lightspeed.codec.bech32 import int_to_chars
from lightspeed.errors import UsageError
from lightspeed.invoice.amount import format_amount
from lightspeed.invoice.features import bits_to_int
from lightspeed.invoice.fields import (
    FALLBACK_P2SH,
    MAX_FIELD_WORDS,
    TAG_DESCRIPTION,
    TAG_DESCRIPTION_HASH,
    TAG_EXPIRY,
    TAG_FALLBACK,
    TAG_FEATURES,
    TAG_METADATA,
    TAG_MIN_FINAL_CLTV_EXPIRY,
    TAG_PAYEE,
    TAG_PAYMENT_HASH,
    TAG_PAYMENT_SECRET,
    TAG_ROUTE_HINT,
    Fallback,
    RouteHintHop,
    TaggedField,
)
from lightspeed.invoice.model import UnsignedInvoice

# var_onion_optin and payment_secret required, basic_mpp optional: what a payee that
# accepts multi-part payments advertises (BOLT 9 assumes 8 and 14).
DEFAULT_FEATURES = frozenset({8, 14, 17})


def bytes_field(tag: int, data: bytes) -> TaggedField:
    """A field carrying bytes (BOLT #11: MUST pad field data to a multiple of 5 bits, using 0s)."""
    nwords = -(-8 * len(data) // 5)
    value = int.from_bytes(data, "big") << (5 * nwords - 8 * len(data))
    return _checked(TaggedField(tag, int_to_chars(value, nwords)))


def int_field(tag: int, value: int) -> TaggedField:
    """A big-endian integer field with the minimum data_length (no leading 0 field elements)."""
    if value < 0:
        raise UsageError("tagged field integers cannot be negative")
    nwords = -(-value.bit_length() // 5)
    return _checked(TaggedField(tag, int_to_chars(value, nwords)))


def fallback_field(fallback: Fallback) -> TaggedField:
    if not 0 <= fallback.version <= FALLBACK_P2SH:
        raise UsageError(f"fallback version {fallback.version} is not 0-18")
    data = bytes_field(TAG_FALLBACK, fallback.data).data
    return _checked(TaggedField(TAG_FALLBACK, int_to_chars(fallback.version, 1) + data))


def route_hint_field(hops: Sequence[RouteHintHop]) -> TaggedField:
    if not hops:
        raise UsageError("a route hint needs at least one hop")
    for hop in hops:
        if len(hop.pubkey) != 33:
            raise UsageError("route hint pubkeys must be 33 bytes")
    return bytes_field(TAG_ROUTE_HINT, b"".join(hop.to_bytes() for hop in hops))


def _checked(field: TaggedField) -> TaggedField:
    if len(field.data) > MAX_FIELD_WORDS:
        raise UsageError(f"{field.letter} field is {len(field.data)} words; the maximum is {MAX_FIELD_WORDS} (639 bytes)")
    return field


def build_invoice(
    *,
    payment_hash: bytes,
    payment_secret: bytes,
    timestamp: int,
    network: Network = BITCOIN,
    amount_msat: int | None = None,
    description: str | None = None,
    description_hash: bytes | None = None,
    expiry: int | None = None,
    min_final_cltv_expiry: int | None = None,
    features: Iterable[int] = DEFAULT_FEATURES,
    payee: bytes | None = None,
    fallbacks: Iterable[Fallback] = (),
    route_hints: Iterable[Sequence[RouteHintHop]] = (),
    metadata: bytes | None = None,
) -> UnsignedInvoice:
    """Tagged fields for a new invoice, in the order the spec's examples use; sign the result.

    ``timestamp`` is passed in (unix seconds) because the core has no clock.
    ``payee`` adds an ``n`` field (it must be the signing key's public key).
    """
    if len(payment_hash) != 32:
        raise UsageError("payment_hash must be 32 bytes")
    if len(payment_secret) != 32:
        raise UsageError("payment_secret must be 32 bytes")
    # BOLT #11: a writer MUST include either exactly one `d` or exactly one `h` field.
    if (description is None) == (description_hash is None):
        raise UsageError("give exactly one of description and description_hash")
    if description_hash is not None and len(description_hash) != 32:
        raise UsageError("description_hash must be 32 bytes")
    if amount_msat is not None and amount_msat <= 0:
        raise UsageError("amount_msat must be positive (or None for any amount)")
    hrp = "ln" + network.bolt11_prefix + (format_amount(amount_msat) if amount_msat is not None else "")
    fields = [
        bytes_field(TAG_PAYMENT_SECRET, payment_secret),
        bytes_field(TAG_PAYMENT_HASH, payment_hash),
    ]
    if description is not None:
        fields.append(bytes_field(TAG_DESCRIPTION, description.encode("utf-8")))
    if description_hash is not None:
        fields.append(bytes_field(TAG_DESCRIPTION_HASH, description_hash))
    if payee is not None:
        if len(payee) != 33:
            raise UsageError("payee must be a 33-byte compressed public key")
        fields.append(bytes_field(TAG_PAYEE, payee))
    if metadata is not None:
        fields.append(bytes_field(TAG_METADATA, metadata))
    if expiry is not None:
        fields.append(int_field(TAG_EXPIRY, expiry))
    if min_final_cltv_expiry is not None:
        fields.append(int_field(TAG_MIN_FINAL_CLTV_EXPIRY, min_final_cltv_expiry))
    fields.extend(fallback_field(f) for f in fallbacks)
    fields.extend(route_hint_field(hops) for hops in route_hints)
    feature_value = bits_to_int(features)
    # BOLT #11: if `9` contains non-zero bits: MUST use the minimum data_length;
    # otherwise: MUST omit the `9` field altogether.
    if feature_value:
        fields.append(int_field(TAG_FEATURES, feature_value))
    return UnsignedInvoice(network, hrp, timestamp, tuple(fields))
