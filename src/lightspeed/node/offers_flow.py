"""BOLT 12 over onion messages: a payee answers invoice requests, a payer fetches invoices.

The payee's offers are stateless: ``offer_metadata`` is a random nonce and an HMAC (keyed
from the node key) over the nonce and every other offer field, so an invoice request, which
copies the offer's fields, proves by itself that we made that offer, exactly as we made it,
and offers survive restarts without a store. An invoice request that checks out is answered
with a signed invoice over the reply path; one that does not gets an ``invoice_error`` naming
the field. The payer sends its signed request with a reply path, waits (with retries), and
checks the invoice against its request before anyone pays it.

What is not here: the invoice's ``invoice_paths`` is a one-hop blinded path to this node (we
are its introduction node) whose ``path_id`` names the payment hash; receiving a payment over
it, and multi-hop blinded payment paths, belong to the node's blinded-payment side.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.node.onion_messenger import InboundOnionMessage
from lightspeed.offers import (
    Invoice,
    InvoiceError,
    InvoiceRequest,
    Offer,
    build_offer,
    check_invoice_for_request,
    check_invoice_request_for_offer,
    check_offer_usable,
    invoice_from_tlv,
    invoice_request_from_tlv,
    request_invoice,
    respond_to_invoice_request,
)
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import (
    BlindedPath,
    EncryptedDataTlv,
    PaymentConstraints,
    create_blinded_path,
)

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.offers")

INVOICE_REQUEST, INVOICE, INVOICE_ERROR = 64, 66, 68
_NONCE = 16
#: Blocks a payment over the invoice's path may still be accepted after the invoice was made.
PATH_CLTV_BLOCKS = 2016


@dataclass(frozen=True)
class FetchedInvoice:
    """An invoice checked against the request we sent (both kept: the proof of what was asked)."""

    invoice: Invoice
    request: InvoiceRequest


class OffersFlow:
    """The node's BOLT 12 exchange over onion messages (``node.offers``)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._key = hashlib.sha256(b"lightspeed offer metadata" + node.privkey).digest()
        self.preimages: dict[bytes, bytes] = {}  # payment hash -> preimage, of invoices we issued
        node.onion_messages.register(INVOICE_REQUEST, self._on_invoice_request)

    # -- payee ---------------------------------------------------------------------------------

    def create_offer(self, description: str, amount_msat: int | None = None, *,
                     absolute_expiry: int | None = None, quantity_max: int | None = None,
                     issuer: str | None = None) -> Offer:
        """A signed-by-metadata offer of this node (``offer_issuer_id`` is our node id)."""
        chains = None if self.node.network.chain_hash == BITCOIN.chain_hash else [self.node.network.chain_hash]
        draft = build_offer(issuer_id=self.node.node_id, description=description, amount_msat=amount_msat,
                            chains=chains, absolute_expiry=absolute_expiry, quantity_max=quantity_max,
                            issuer=issuer)
        nonce = os.urandom(_NONCE)
        return replace(draft, metadata=nonce + self._tag(nonce, draft))

    def _tag(self, nonce: bytes, offer: Offer) -> bytes:
        return hmac.new(self._key, nonce + replace(offer, metadata=None).to_tlv(), "sha256").digest()

    def is_ours(self, offer: Offer) -> bool:
        metadata = offer.metadata or b""
        nonce = metadata[:_NONCE]
        return len(metadata) == _NONCE + 32 and hmac.compare_digest(metadata[_NONCE:], self._tag(nonce, offer))

    async def _on_invoice_request(self, message: InboundOnionMessage) -> None:
        if message.reply_path is None:
            return  # BOLT #12: an invoice request without reply path cannot be answered
        try:
            invoice = self.answer(message.value(INVOICE_REQUEST) or b"")
            record = (INVOICE, invoice.to_tlv())
        except (DecodeError, UsageError) as exc:  # the reason names the field ("offer_metadata: ...")
            record = (INVOICE_ERROR, InvoiceError(error=str(exc)).to_tlv())
        try:
            await self.node.onion_messages.reply(message, [record])
        except LightspeedError as exc:  # no way back now: onion messages are unreliable
            log.info("cannot answer an invoice request: %s", exc)

    def answer(self, invoice_request_tlv: bytes) -> Invoice:
        """Our signed invoice for an invoice request (DecodeError/UsageError say why not)."""
        invreq = invoice_request_from_tlv(invoice_request_tlv)  # every reader rule, the signature
        if invreq.is_refund or not self.is_ours(invreq.offer):
            raise DecodeError("offer_metadata", "not an offer made by this node")
        now = int(time.time())
        check_invoice_request_for_offer(invreq, invreq.offer, now=now,
                                        accepted_chains={self.node.network.chain_hash})
        preimage = os.urandom(32)
        payment_hash = sha256(preimage)
        height = self.node.chain.tip()[0]
        path = create_blinded_path(os.urandom(32), [self.node.node_id], [EncryptedDataTlv(
            path_id=payment_hash,
            payment_constraints=PaymentConstraints(height + PATH_CLTV_BLOCKS, 1))])
        policy = self.node.forwarding_policy
        payinfo = BlindedPayInfo(0, 0, policy.cltv_expiry_delta, 1, 2**64 - 1)
        invoice = respond_to_invoice_request(invreq, node_key=self.node.privkey, payment_hash=payment_hash,
                                             created_at=now, paths=[path], blindedpay=[payinfo])
        self.preimages[payment_hash] = preimage
        return invoice

    # -- payer ---------------------------------------------------------------------------------

    async def fetch_invoice(self, offer: Offer, *, amount_msat: int | None = None, quantity: int | None = None,
                            payer_note: str | None = None, timeout: float = 30.0,
                            attempts: int = 3) -> FetchedInvoice:
        """Request an invoice for ``offer`` over onion messages and check it against our request.

        Raises :class:`PaymentError` when the payee answers with an ``invoice_error`` or an invoice
        that fails a check, TimeoutError when no answer comes, DecodeError/UsageError for an
        offer we must not respond to (expired, another chain) or a request we cannot make.
        """
        now = int(time.time())
        accepted = {self.node.network.chain_hash}
        # BOLT #12: if the current time is after `offer_absolute_expiry`: MUST NOT respond to the offer.
        check_offer_usable(offer, now=now, accepted_chains=accepted)
        chain = self.node.network.chain_hash if offer.chains is not None else None
        invreq = request_invoice(offer, payer_key=os.urandom(32), metadata=os.urandom(16), amount_msat=amount_msat,
                                 quantity=quantity, chain=chain, payer_note=payer_note)
        destination: bytes | BlindedPath
        if offer.issuer_id is not None:
            destination = offer.issuer_id
        else:
            assert offer.paths  # request_invoice refuses an offer with neither
            destination = offer.paths[0]
        reply = await self.node.onion_messages.request(destination, [(INVOICE_REQUEST, invreq.to_tlv())],
                                                       timeout=timeout, attempts=attempts)
        if reply.tlv_type == INVOICE_ERROR:
            refusal = InvoiceError.from_tlv(reply.value(INVOICE_ERROR) or b"")
            raise PaymentError(f"the payee refused the invoice request: {refusal.error}")
        if reply.tlv_type != INVOICE:
            raise PaymentError(f"the payee answered with a message of type {reply.tlv_type}, not an invoice")
        try:
            invoice = invoice_from_tlv(reply.value(INVOICE) or b"")
            check_invoice_for_request(invoice, invreq, now=int(time.time()), accepted_chains=accepted)
        except DecodeError as exc:
            raise PaymentError(f"the payee's invoice is not valid for our request: {exc}") from None
        return FetchedInvoice(invoice, invreq)

