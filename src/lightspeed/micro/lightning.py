"""Adapters from a Lightspeed :class:`~lightspeed.node.Node` to the payee and payer roles.

The server sells allowances through its node's invoices (:class:`NodePayee`) and pays
refunds with it (:class:`NodePayer`'s ``pay_once`` and ``payment_status``, the
:class:`~lightspeed.micro.refunds.RefundPayer` role); the client pays allowance and batch
invoices with its own node (``pay``). Any other wallet fits as long as it has the same methods.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lightspeed.errors import PaymentError, UsageError
from lightspeed.invoice import Invoice
from lightspeed.invoice.decode import decode
from lightspeed.micro.refunds import PaymentState, PaymentStatus

if TYPE_CHECKING:
    from lightspeed.node.node import Node


class NodePayee:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def create_invoice(self, amount_msat: int, description: str, expiry: int) -> Invoice:
        return self.node.create_invoice(amount_msat, description, expiry)

    async def is_paid(self, payment_hash: bytes) -> bool:
        return payment_hash in self.node.settled_invoices


class NodePayer:
    """Pays with ``node``. ``return_path``: each payment carries a fresh blinded return path, so
    the seller can refund unused credit without learning who paid (a node without a peer to
    introduce one pays without it: ``without_return_path`` counts those payments)."""

    def __init__(self, node: Node, timeout: float = 30, return_path: bool = False) -> None:
        self.node, self.timeout, self.return_path = node, timeout, return_path
        self.without_return_path = 0

    async def pay(self, invoice: str) -> bytes:
        back = None
        if self.return_path:
            try:
                back = self.node.return_paths.create(description="unused credit")
            except UsageError:
                self.without_return_path += 1
        return await self.node.pay(decode(invoice), timeout=self.timeout, return_path=back)

    async def pay_once(self, invoice: str) -> bytes:
        """Pay, unless the node ever started a payment to this hash (even one that failed).

        The check and the node's record of the new payment happen with no ``await`` between
        them (``Node.pay`` records the payment before its first one), so on one event loop no
        other caller can slip in: a payment hash is paid at most once.
        """
        decoded = decode(invoice)
        if self.node.payment_status(decoded.payment_hash) is not None:
            raise PaymentError("a payment to this hash was started before: not paying it again")
        return await self.node.pay(decoded, timeout=self.timeout)

    async def payment_status(self, payment_hash: bytes) -> PaymentStatus:
        """From the node's payment record. The node marks a payment failed only once none of
        its HTLCs is in any unrevoked commitment (nothing can settle it any more)."""
        record = self.node.payment_status(payment_hash)
        if record is None:
            return PaymentStatus(PaymentState.UNKNOWN)
        if record.status == "succeeded":
            return PaymentStatus(PaymentState.SUCCEEDED, record.preimage or b"")
        if record.status == "failed":
            return PaymentStatus(PaymentState.FAILED, reason=record.reason or "the payment failed")
        return PaymentStatus(PaymentState.PENDING)


class NodeReturnPaths:
    """The seller's node refunding through return paths (the
    :class:`~lightspeed.micro.auto_refund.ReturnPathPayer` role)."""

    def __init__(self, node: Node, timeout: float = 60, fetch_timeout: float = 30) -> None:
        self.node, self.timeout, self.fetch_timeout = node, timeout, fetch_timeout

    def refundable_msat(self, payment_hash: bytes) -> int | None:
        from lightspeed.offers import decode_offer

        store = self.node.store
        text = store.return_path(payment_hash)
        invoice = store.invoice(payment_hash)
        if text is None or invoice is None or invoice.status != "paid":
            return None
        if decode_offer(text).is_expired(int(time.time())):
            return None
        return max(0, invoice.received_msat - self.node.return_paths.refunded_msat(payment_hash))

    def refunded_msat(self, payment_hash: bytes) -> int:
        return self.node.return_paths.refunded_msat(payment_hash)

    @property
    def node_id(self) -> bytes:
        return self.node.node_id

    async def refund(self, payment_hash: bytes, amount_msat: int) -> bytes:
        done = await self.node.return_paths.refund(payment_hash, amount_msat, timeout=self.timeout,
                                                   fetch_timeout=self.fetch_timeout)
        return done.preimage
