"""An in-process settlement for pay-per-call protocol tests: real signed invoices, instant payment.

The protocol logic (which invoice, when, how much) is what these tests exercise; the
Lightning payment itself is covered end to end with real nodes in test_micro_e2e.py.
``pay`` checks the invoice's signature and amount exactly like a payer would, and
records the payment so ``is_paid`` answers as the payee's node does.
"""

from __future__ import annotations

import os
import time

from lightspeed.bitcoin.network import REGTEST
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import PaymentError
from lightspeed.invoice import Invoice, build_invoice
from lightspeed.invoice.decode import decode
from lightspeed.micro.refunds import PaymentState, PaymentStatus


class Ledger:
    def __init__(self) -> None:
        self.privkey = os.urandom(32)
        self.client_privkey = os.urandom(32)  # signs the clients' refund invoices (not the server's node)
        self.node_id = pubkey_from_privkey(self.privkey)
        self.preimages: dict[bytes, bytes] = {}
        self.paid: dict[bytes, int] = {}
        self.payments: list[int] = []  # amounts paid, in order

    async def create_invoice(self, amount_msat: int, description: str, expiry: int) -> Invoice:
        return self._invoice(amount_msat, description, expiry, self.privkey)

    async def create_client_invoice(self, amount_msat: int, description: str, expiry: int) -> Invoice:
        """An invoice of a client's node (a refund is never payable to the server's own node)."""
        return self._invoice(amount_msat, description, expiry, self.client_privkey)

    def _invoice(self, amount_msat: int, description: str, expiry: int, key: bytes) -> Invoice:
        preimage = os.urandom(32)
        invoice = build_invoice(network=REGTEST, amount_msat=amount_msat, description=description,
                                payment_hash=sha256(preimage), payment_secret=os.urandom(32),
                                timestamp=int(time.time()), expiry=expiry, payee=None).sign(key)
        self.preimages[invoice.payment_hash] = preimage
        return invoice

    async def is_paid(self, payment_hash: bytes) -> bool:
        return payment_hash in self.paid

    def pay_sync(self, invoice_text: str) -> bytes:
        invoice = decode(invoice_text)
        preimage = self.preimages.get(invoice.payment_hash)
        if preimage is None or invoice.payment_hash in self.paid:
            raise PaymentError("unknown or already paid invoice")
        self.paid[invoice.payment_hash] = invoice.amount_msat or 0
        self.payments.append(invoice.amount_msat or 0)
        return preimage

    async def pay(self, invoice_text: str) -> bytes:
        return self.pay_sync(invoice_text)

    async def pay_once(self, invoice_text: str) -> bytes:
        return self.pay_sync(invoice_text)  # refuses an invoice it paid already

    async def payment_status(self, payment_hash: bytes) -> PaymentStatus:
        if payment_hash in self.paid:
            return PaymentStatus(PaymentState.SUCCEEDED, self.preimages[payment_hash])
        return PaymentStatus(PaymentState.UNKNOWN)


class SyncPayer:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def pay(self, invoice: str) -> bytes:
        return self.ledger.pay_sync(invoice)
