"""Decode any BOLT 12 string by its prefix: ``lno`` offer, ``lnr`` invoice request, ``lni`` invoice."""

from __future__ import annotations

from lightspeed.offers.invoice import Invoice, invoice_from_records
from lightspeed.offers.invoice_request import InvoiceRequest, invoice_request_from_records
from lightspeed.offers.offer import Offer, offer_from_records
from lightspeed.offers.strings import HRP_INVOICE, HRP_INVOICE_REQUEST, decode_string
from lightspeed.offers.tlv_fields import TlvRecord, read_records

Bolt12 = Offer | InvoiceRequest | Invoice


def decode_records(hrp: str, records: tuple[TlvRecord, ...], *, check_signature: bool = True) -> Bolt12:
    if hrp == HRP_INVOICE:
        return invoice_from_records(records, check_signature=check_signature)
    if hrp == HRP_INVOICE_REQUEST:
        return invoice_request_from_records(records, check_signature=check_signature)
    return offer_from_records(records)


def decode_bolt12(text: str, *, check_signature: bool = True) -> Bolt12:
    """Decode and check any BOLT 12 string; :class:`DecodeError` names the field at fault."""
    hrp, stream = decode_string(text)
    return decode_records(hrp, read_records(stream), check_signature=check_signature)
