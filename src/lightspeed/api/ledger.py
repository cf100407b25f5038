"""Invoices and payments as the REST API shows them, read from the node's durable store.

The store (``node.store``) is the record: what was paid, what is pending, which
invoices were settled; it survives restarts. It keeps no times, so this module
adds the times this daemon saw things happen (``Timestamps``, in memory: after
a restart they are ``null`` for older entries; an invoice's own creation time
always comes from the invoice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightspeed.errors import DecodeError
from lightspeed.invoice import Invoice, decode
from lightspeed.store import InvoiceRecord, PaymentRecord


@dataclass
class Timestamps:
    """When this daemon saw a payment start and end, by payment hash (unix seconds)."""

    started: dict[bytes, int] = field(default_factory=dict)
    settled: dict[bytes, int] = field(default_factory=dict)
    _decoded: dict[str, Invoice | None] = field(default_factory=dict)
    _bolt12_payees: dict[str, str | None] = field(default_factory=dict)

    def invoice(self, text: str) -> Invoice | None:
        """The decoded invoice (cached: decoding recovers a public key)."""
        if text not in self._decoded:
            try:
                self._decoded[text] = decode(text)
            except DecodeError:
                self._decoded[text] = None
        return self._decoded[text]

    def bolt12_payee(self, text: str) -> str | None:
        """``invoice_node_id`` of an ``lni1...`` we paid (cached: decoding checks a signature)."""
        if text not in self._bolt12_payees:
            from lightspeed.offers import decode_invoice

            try:
                self._bolt12_payees[text] = decode_invoice(text, check_signature=False).node_id.hex()
            except DecodeError:
                self._bolt12_payees[text] = None
        return self._bolt12_payees[text]


def sent_json(record: PaymentRecord, times: Timestamps) -> dict[str, Any]:
    if record.invoice.startswith("lni1"):  # a BOLT 12 invoice (offer or refund): its invoice_node_id
        payee = times.bolt12_payee(record.invoice)
    else:
        invoice = times.invoice(record.invoice) if record.invoice else None
        payee = None if invoice is None else invoice.payee.hex()
    return {
        "direction": "sent",
        "payment_hash": record.payment_hash.hex(),
        "amount_msat": record.amount_msat,
        "status": record.status,
        "created_at": times.started.get(record.payment_hash),
        "settled_at": times.settled.get(record.payment_hash) if record.status != "pending" else None,
        "preimage": None if record.preimage is None else record.preimage.hex(),
        "payee": payee,
        "failure_reason": record.reason or None,
        # The invoice paid (lnbc... or a BOLT 12 lni1...): with the preimage, the proof of payment,
        # also when the pay call returned before the payment settled.
        "invoice": record.invoice or None,
    }


def received_json(record: InvoiceRecord, times: Timestamps, node_id: bytes) -> dict[str, Any]:
    return {
        "direction": "received",
        "payment_hash": record.payment_hash.hex(),
        "amount_msat": record.received_msat,
        "status": "succeeded",
        "created_at": times.settled.get(record.payment_hash),
        "settled_at": times.settled.get(record.payment_hash),
        "preimage": record.preimage.hex(),
        "payee": node_id.hex(),
        "failure_reason": None,
        "invoice": None,
    }


def invoice_json(record: InvoiceRecord, times: Timestamps, now: int) -> dict[str, Any]:
    invoice = times.invoice(record.invoice)
    created_at = None if invoice is None else invoice.timestamp
    expires_at = None if invoice is None else invoice.expires_at
    paid = record.status == "paid"
    status = "paid" if paid else "expired" if expires_at is not None and now > expires_at else "unpaid"
    return {
        "invoice": record.invoice,
        "payment_hash": record.payment_hash.hex(),
        "amount_msat": record.amount_msat,
        "description": None if invoice is None else invoice.description,
        "created_at": created_at,
        "expires_at": expires_at,
        "status": status,
        "paid_at": times.settled.get(record.payment_hash) if paid else None,
        "received_msat": record.received_msat if paid else None,
    }
