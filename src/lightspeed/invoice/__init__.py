"""BOLT 11 invoices: decode, build and sign, and prove payment.

>>> invoice = decode("lnbc2500u1pvjluez...")          # doctest: +SKIP
>>> invoice.amount_msat, invoice.payee.hex()          # doctest: +SKIP
"""

from lightspeed.invoice.amount import format_amount, parse_amount
from lightspeed.invoice.decode import decode
from lightspeed.invoice.encode import DEFAULT_FEATURES, build_invoice
from lightspeed.invoice.features import FEATURE_NAMES, feature_bit, feature_name
from lightspeed.invoice.fields import (
    Fallback,
    RouteHintHop,
    TaggedField,
    format_short_channel_id,
    parse_short_channel_id,
)
from lightspeed.invoice.model import Invoice, UnsignedInvoice, verify_payment_proof

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURE_NAMES",
    "Fallback",
    "Invoice",
    "RouteHintHop",
    "TaggedField",
    "UnsignedInvoice",
    "build_invoice",
    "decode",
    "feature_bit",
    "feature_name",
    "format_amount",
    "format_short_channel_id",
    "parse_amount",
    "parse_short_channel_id",
    "verify_payment_proof",
]
