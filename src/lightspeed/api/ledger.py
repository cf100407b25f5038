"""What the REST API reports about invoices and payments, kept beside the node.

The node decides and settles payments; this ledger only remembers what the API
asked for and what came of it, so ``GET /v1/payments`` and ``GET /v1/invoices``
can answer. It lives in memory for the daemon's lifetime: the durable record of
payments belongs to the node's store (issue 5, store/), which this should read
once it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lightspeed.invoice import Invoice

Direction = Literal["sent", "received"]
Status = Literal["pending", "succeeded", "failed"]


@dataclass
class PaymentRecord:
    direction: Direction
    payment_hash: bytes
    amount_msat: int
    status: Status
    created_at: int
    settled_at: int | None = None
    preimage: bytes | None = None
    payee: bytes | None = None
    failure_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "payment_hash": self.payment_hash.hex(),
            "amount_msat": self.amount_msat,
            "status": self.status,
            "created_at": self.created_at,
            "settled_at": self.settled_at,
            "preimage": None if self.preimage is None else self.preimage.hex(),
            "payee": None if self.payee is None else self.payee.hex(),
            "failure_reason": self.failure_reason,
        }


@dataclass
class InvoiceRecord:
    invoice: Invoice
    text: str
    paid_at: int | None = None
    received_msat: int | None = None

    def to_json(self, now: int) -> dict[str, Any]:
        expires_at = self.invoice.timestamp + self.invoice.expiry
        status = "paid" if self.paid_at is not None else "expired" if now >= expires_at else "unpaid"
        return {
            "invoice": self.text,
            "payment_hash": self.invoice.payment_hash.hex(),
            "amount_msat": self.invoice.amount_msat,
            "description": self.invoice.description,
            "created_at": self.invoice.timestamp,
            "expires_at": expires_at,
            "status": status,
            "paid_at": self.paid_at,
            "received_msat": self.received_msat,
        }


class Ledger:
    """Invoices we issued and payments both ways, in the order they happened."""

    def __init__(self) -> None:
        self.payments: list[PaymentRecord] = []
        self.invoices: dict[bytes, InvoiceRecord] = {}

    def add_invoice(self, invoice: Invoice, text: str) -> InvoiceRecord:
        record = self.invoices[invoice.payment_hash] = InvoiceRecord(invoice, text)
        return record

    def start_payment(self, invoice: Invoice, now: int) -> PaymentRecord:
        assert invoice.amount_msat is not None
        record = PaymentRecord("sent", invoice.payment_hash, invoice.amount_msat, "pending", now,
                               payee=invoice.payee)
        self.payments.append(record)
        return record

    def received(self, payment_hash: bytes, amount_msat: int, now: int) -> None:
        """The node settled an incoming HTLC for one of our invoices."""
        found = self.invoices.get(payment_hash)
        if found is not None:
            found.paid_at, found.received_msat = now, amount_msat
        self.payments.append(PaymentRecord("received", payment_hash, amount_msat, "succeeded", now, now))
