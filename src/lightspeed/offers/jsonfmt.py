"""The JSON form of a BOLT 12 string: the ``lightspeed offer decode`` contract.

``type`` ("offer" | "invoice_request" | "invoice"), ``tlv_fields`` (every record in
wire order as ``{type, length, hex}``), then the interpreted fields named as in
BOLT 12 (``offer_*``, ``invreq_*``, ``invoice_*``): hex for bytes, ``null`` for an
absent field, feature fields as sorted lists of set bits (``[]`` when absent). Signed
types add ``merkle_root``, ``signature`` and ``signature_valid`` (``null`` for an
unsigned refund). Hex appears only here, at the edge.
"""

from __future__ import annotations

from typing import Any

from lightspeed.invoice.fields import format_short_channel_id
from lightspeed.offers.decode import decode_records
from lightspeed.offers.invoice import Invoice
from lightspeed.offers.invoice_request import InvoiceRequest
from lightspeed.offers.merkle import merkle_root_of_records
from lightspeed.offers.offer import Offer
from lightspeed.offers.strings import decode_string
from lightspeed.offers.tlv_fields import feature_bits, read_records
from lightspeed.onion.blinding import BlindedPath

_TYPE_NAMES = {"lno": "offer", "lnr": "invoice_request", "lni": "invoice"}


def _hex(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def _bits(data: bytes | None) -> list[int]:
    return sorted(feature_bits(data or b""))


def path_to_json(path: BlindedPath) -> dict[str, Any]:
    """A ``blinded_path``; a ``sciddir`` introduction adds ``short_channel_id`` and ``direction``."""
    out: dict[str, Any] = {"first_node_id": path.first_node_id.hex()}
    if len(path.first_node_id) == 9:
        out["short_channel_id"] = format_short_channel_id(int.from_bytes(path.first_node_id[1:], "big"))
        out["direction"] = path.first_node_id[0]
    out["first_path_key"] = path.first_path_key.hex()
    out["hops"] = [{"blinded_node_id": hop.blinded_node_id.hex(),
                    "encrypted_recipient_data": hop.encrypted_recipient_data.hex()} for hop in path.hops]
    return out


def _paths(paths: tuple[BlindedPath, ...] | None) -> list[dict[str, Any]] | None:
    return None if paths is None else [path_to_json(p) for p in paths]


def offer_fields_json(offer: Offer) -> dict[str, Any]:
    return {
        "offer_chains": None if offer.chains is None else [c.hex() for c in offer.chains],
        "offer_metadata": _hex(offer.metadata),
        "offer_currency": offer.currency,
        "offer_amount": offer.amount,
        "offer_description": offer.description,
        "offer_features": _bits(offer.features),
        "offer_absolute_expiry": offer.absolute_expiry,
        "offer_paths": _paths(offer.paths),
        "offer_issuer": offer.issuer,
        "offer_quantity_max": offer.quantity_max,
        "offer_issuer_id": _hex(offer.issuer_id),
    }


def invreq_fields_json(invreq: InvoiceRequest) -> dict[str, Any]:
    name = invreq.bip_353_name
    return {
        "invreq_metadata": _hex(invreq.metadata),
        "invreq_chain": _hex(invreq.chain),
        "invreq_amount": invreq.amount_msat,
        "invreq_features": _bits(invreq.features),
        "invreq_quantity": invreq.quantity,
        "invreq_payer_id": _hex(invreq.payer_id),
        "invreq_payer_note": invreq.payer_note,
        "invreq_paths": _paths(invreq.paths),
        "invreq_bip_353_name": None if name is None else {"name": name.name, "domain": name.domain},
    }


def invoice_fields_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_paths": _paths(invoice.paths),
        "invoice_blindedpay": [{
            "fee_base_msat": i.fee_base_msat, "fee_proportional_millionths": i.fee_proportional_millionths,
            "cltv_expiry_delta": i.cltv_expiry_delta, "htlc_minimum_msat": i.htlc_minimum_msat,
            "htlc_maximum_msat": i.htlc_maximum_msat, "features": _bits(i.features),
        } for i in invoice.blindedpay],
        "invoice_created_at": invoice.created_at,
        "invoice_relative_expiry": invoice.relative_expiry,
        "invoice_payment_hash": invoice.payment_hash.hex(),
        "invoice_amount": invoice.amount_msat,
        "invoice_fallbacks": None if invoice.fallbacks is None else [
            {"version": f.version, "address": f.address.hex()} for f in invoice.fallbacks],
        "invoice_features": _bits(invoice.features),
        "invoice_node_id": invoice.node_id.hex(),
    }


def bolt12_to_json(text: str) -> dict[str, Any]:
    """Decode ``text`` and describe it. Every reader rule applies except that a bad signature
    is reported as ``signature_valid: false`` instead of an error."""
    hrp, stream = decode_string(text)
    records = read_records(stream)
    decoded = decode_records(hrp, records, check_signature=False)
    out: dict[str, Any] = {
        "type": _TYPE_NAMES[hrp],
        "tlv_fields": [{"type": r.type, "length": len(r.value), "hex": r.value.hex()} for r in records],
    }
    if isinstance(decoded, Offer):
        out.update(offer_fields_json(decoded))
        return out
    request = decoded.request if isinstance(decoded, Invoice) else decoded
    out.update(offer_fields_json(request.offer))
    out.update(invreq_fields_json(request))
    valid: bool | None
    if isinstance(decoded, Invoice):
        out.update(invoice_fields_json(decoded))
        valid = decoded.signature_valid()
    else:
        valid = None if decoded.signature is None and decoded.is_refund else decoded.signature_valid()
    out["merkle_root"] = merkle_root_of_records(records).hex()
    out["signature"] = _hex(decoded.signature)
    out["signature_valid"] = valid
    return out
