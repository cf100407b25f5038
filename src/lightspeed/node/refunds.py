"""BOLT 12 refunds (``lnr1...``): "send me an invoice for this amount and I will pay it".

Two roles. The *refund's payer* (the node that owes money) creates the refund: an
invoice request without offer fields, whose ``invreq_paths`` is a blinded path back to
itself (through a peer) and whose ``invreq_payer_id`` is a fresh key. The *refund's payee*
(who is owed) answers it with an invoice over its own blinded payment paths, sent as an
onion message along those paths (:meth:`Refunds.pay`).

The payer accepts an invoice only through the path it published (the ``path_id`` names the
refund, after a restart too), only if it copies the refund exactly and is signed, unexpired,
on our chain, for the refund's amount; and it pays a refund once: the accepted invoice is
committed with status ``paying`` before the first HTLC leaves, and any other invoice for the
same refund is refused until that payment has failed (``RefundRecord`` in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.node.offers_flow import pay_invoice
from lightspeed.node.onion_messenger import InboundOnionMessage
from lightspeed.offers import (
    Invoice,
    InvoiceError,
    InvoiceRequest,
    build_refund,
    check_invoice_for_request,
    decode_invoice_request,
    invoice_from_tlv,
)
from lightspeed.onion.blinding import BlindedPath
from lightspeed.store import RefundRecord

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.refunds")

INVOICE, INVOICE_ERROR = 66, 68
#: A refund with no expiry given is refused after a day: an open refund is money we owe to
#: whoever asks first, so it should not stay open for good.
DEFAULT_REFUND_EXPIRY = 86_400


@dataclass(frozen=True)
class RefundInvoice:
    """What the refund's payee sent: the invoice, and whether it was paid before we stopped waiting."""

    invoice: Invoice
    paid: bool


class Refunds:
    """The node's BOLT 12 refunds, both roles (``node.refunds``)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._key = hashlib.sha256(b"lightspeed refund payer" + node.privkey).digest()
        node.onion_messages.register(INVOICE, self._on_invoice)

    # -- the refund's payer -----------------------------------------------------------------------

    def create(self, amount_msat: int, description: str, *, absolute_expiry: int | None = None) -> InvoiceRequest:
        """A refund of ``amount_msat`` from us, recorded (status ``open``) before it is returned."""
        node = self.node
        node._require_store()
        now = int(time.time())
        if absolute_expiry is None:
            absolute_expiry = now + DEFAULT_REFUND_EXPIRY
        elif absolute_expiry <= now:
            raise UsageError(f"absolute_expiry: {absolute_expiry} is not in the future")
        path, path_id = node.onion_messages.blinded_path_to_us()
        metadata = os.urandom(16)
        # BOLT #12: MUST set `invreq_payer_id` to a transient public key; MUST remember the secret
        # key (re-derived from our node key and the metadata: nothing secret is stored).
        payer_key = hashlib.sha256(self._key + metadata).digest()
        refund = build_refund(payer_id=pubkey_from_privkey(payer_key), metadata=metadata, description=description,
                              amount_msat=amount_msat, chain=node.network.chain_hash,
                              absolute_expiry=absolute_expiry, paths=[path])
        assert refund.payer_id is not None
        with node.store.transaction():
            node.store.put_refund(RefundRecord(refund.payer_id, refund.encode(), path_id, amount_msat,
                                               absolute_expiry))
        return refund

    def status(self, record: RefundRecord) -> RefundRecord:
        """``record`` with ``paying`` resolved by its payment's record (paid or failed, after a restart too)."""
        if record.status != "paying" or record.payment_hash is None:
            return record
        payment = self.node.store.payment(record.payment_hash)
        if payment is None or payment.status == "pending":
            return record
        return replace(record, status="paid" if payment.status == "succeeded" else "failed")

    async def _on_invoice(self, message: InboundOnionMessage) -> None:
        # BOLT #12 (reader of an invoice): if `invreq_paths` is present: MUST reject the invoice if it
        # did not arrive via one of those paths. (The path's path_id names the refund it is for.)
        if message.path_id is None:
            return
        record = self.node.store.refund_by_path_id(message.path_id)
        if record is None:
            return  # an invoice we never asked for
        try:
            invoice = self.accept(record, message.value(INVOICE) or b"")
        except (DecodeError, UsageError) as exc:
            log.info("refused an invoice for refund %s: %s", record.payer_id.hex(), exc)
            if message.reply_path is not None:
                # Onion messages are unreliable: without a way back the payee's wait just ends.
                with contextlib.suppress(LightspeedError):
                    await self.node.onion_messages.reply(message, [(INVOICE_ERROR,
                                                                    InvoiceError(error=str(exc)).to_tlv())])
            return
        if invoice is None:
            return  # the invoice we are paying (or paid) again: nothing more to do
        try:
            await pay_invoice(self.node, invoice)
        except (PaymentError, UsageError) as exc:
            log.info("refund %s: paying the invoice failed: %s", record.payer_id.hex(), exc)

    def accept(self, record: RefundRecord, invoice_tlv: bytes) -> Invoice | None:
        """Check an invoice for our refund; commit it as the one we pay. ``None``: it is the one we
        already pay or paid (a resend). DecodeError/UsageError say why it is refused."""
        node = self.node
        refund = decode_invoice_request(record.refund)
        invoice = invoice_from_tlv(invoice_tlv)  # every reader rule, the signature with invoice_node_id
        now = int(time.time())
        # BOLT #12: MUST reject the invoice if all fields in ranges 0 to 159 and 1000000000 to
        # 2999999999 (inclusive) do not exactly match the invoice request; ... the chain; the expiry.
        check_invoice_for_request(invoice, refund, now=now, accepted_chains={node.network.chain_hash})
        current = self.status(record)
        if current.status in ("paying", "paid"):
            if current.payment_hash == invoice.payment_hash:
                return None
            paid_hash = current.payment_hash.hex() if current.payment_hash else "?"
            raise UsageError(f"refund: already {current.status} (payment_hash {paid_hash}): it is paid once")
        if refund.offer.is_expired(now):
            raise DecodeError("offer_absolute_expiry", f"the refund expired at {refund.offer.absolute_expiry}")
        if node.store.payment(invoice.payment_hash) is not None:
            raise UsageError("invoice_payment_hash: a payment hash we paid (or are paying) before")
        with node.store.transaction():  # before any HTLC leaves: never a second invoice for this refund
            node.store.put_refund(replace(record, status="paying", payment_hash=invoice.payment_hash,
                                          invoice=invoice.encode()))
        return invoice

    # -- the refund's payee -----------------------------------------------------------------------

    async def pay(self, text: str, *, timeout: float = 30.0, attempts: int = 3) -> RefundInvoice:
        """Answer the refund ``text`` (``lnr1...``) with our invoice and wait until it is paid.

        Raises DecodeError for a string that is not a usable refund (an offer's request, expired,
        another chain), PaymentError when the refund's payer refuses our invoice, and returns
        with ``paid`` False when no payment came within ``timeout`` (it may still come).
        """
        node = self.node
        refund = decode_invoice_request(text)
        if not refund.is_refund:
            raise DecodeError("refund", "an invoice request for an offer, not a refund")
        now = int(time.time())
        if refund.offer.is_expired(now):
            # BOLT #12: MUST reject the invoice request if ... expired (as for an offer).
            raise DecodeError("offer_absolute_expiry", f"the refund expired at {refund.offer.absolute_expiry}")
        if refund.chain_hash != node.network.chain_hash:
            raise DecodeError("invreq_chain", "not the chain of this node")
        assert refund.amount_msat is not None and refund.payer_id is not None  # reader rules of a refund
        invoice = node.offers.invoice_for(refund, refund.amount_msat, now)
        # BOLT #12: if `invreq_paths` is present: MUST send the invoice using those paths;
        # otherwise: MUST send it to `invreq_payer_id` directly. (Each attempt over the next path.)
        destinations: list[bytes | BlindedPath] = list(refund.paths) if refund.paths else [refund.payer_id]
        waiting = asyncio.ensure_future(node.onion_messages.request_any(
            destinations, [(INVOICE, invoice.to_tlv())], timeout=timeout, attempts=attempts))
        try:
            while not waiting.done():
                if self._received(invoice):
                    return RefundInvoice(invoice, True)
                await asyncio.sleep(0.05)
            try:
                reply, _ = waiting.result()
            except TimeoutError:
                return RefundInvoice(invoice, self._received(invoice))
            if reply.tlv_type == INVOICE_ERROR:
                refusal = InvoiceError.from_tlv(reply.value(INVOICE_ERROR) or b"")
                raise PaymentError(f"the refund's payer refused our invoice: {refusal.error}")
            raise PaymentError(f"the refund's payer answered with a message of type {reply.tlv_type}")
        finally:
            waiting.cancel()

    def _received(self, invoice: Invoice) -> bool:
        stored = self.node.store.invoice(invoice.payment_hash)
        return stored is not None and stored.status == "paid"
