"""BOLT 12 over onion messages: a payee answers invoice requests, a payer fetches invoices.

The payee's offers are stateless: ``offer_metadata`` is a random nonce and an HMAC (keyed
from the node key) over the nonce and every other offer field, so an invoice request, which
copies the offer's fields, proves by itself that we made that offer, exactly as we made it,
and offers survive restarts without a store. An invoice request that checks out is answered
with a signed invoice over the reply path; one that does not gets an ``invoice_error`` naming
the field. The payer sends its signed request with a reply path, waits (with retries), and
checks the invoice against its request before anyone pays it.

The invoice's payment is a blinded-only receivable of the node (its preimage and secret in the
store before the invoice is sent: a restart between invoice and payment still settles), over
paths through our peers' neighbours (:mod:`lightspeed.node.offer_paths`).
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
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.node.offer_paths import invoice_path_routes
from lightspeed.node.onion_messenger import InboundOnionMessage
from lightspeed.offers import (
    DEFAULT_RELATIVE_EXPIRY,
    Invoice,
    InvoiceError,
    InvoiceRequest,
    Offer,
    build_offer,
    check_invoice_for_request,
    check_invoice_request_for_offer,
    check_offer_usable,
    expected_amount_msat,
    invoice_from_tlv,
    invoice_request_from_tlv,
    request_invoice,
    respond_to_invoice_request,
)
from lightspeed.offers.tlv_fields import MPP_COMPULSORY, MPP_OPTIONAL, feature_bits
from lightspeed.onion.blinding import (
    BlindedPath,
)

if TYPE_CHECKING:
    from lightspeed.node.async_draft import StaticInvoicePayment
    from lightspeed.node.node import Node

MAX_PARTS = 16  # as Node.pay: the most parts one payment is split into

log = logging.getLogger("lightspeed.offers")

INVOICE_REQUEST, INVOICE, INVOICE_ERROR = 64, 66, 68
STATIC_INVOICE = 70  # the async-payments draft (bolts#1149): what an offline payee's LSP answers
_NONCE = 16


@dataclass(frozen=True)
class FetchedInvoice:
    """An invoice checked against the request we sent (both kept: the proof of what was asked)."""

    invoice: Invoice
    request: InvoiceRequest


@dataclass(frozen=True)
class FetchedStaticInvoice:
    """The payee's LSP answered our request with the payee's static invoice (``static_invoice``, 70)."""

    static_invoice: bytes
    request: InvoiceRequest


@dataclass(frozen=True)
class OfferPayment:
    """A paid offer: the signed invoice and the preimage are the proof of payment."""

    invoice: Invoice
    request: InvoiceRequest
    preimage: bytes
    fee_msat: int


class OffersFlow:
    """The node's BOLT 12 exchange over onion messages (``node.offers``)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._key = hashlib.sha256(b"lightspeed offer metadata" + node.privkey).digest()
        node.onion_messages.register(INVOICE_REQUEST, self._on_invoice_request)

    # -- payee ---------------------------------------------------------------------------------

    def create_offer(self, description: str, amount_msat: int | None = None, *,
                     absolute_expiry: int | None = None, quantity_max: int | None = None,
                     issuer: str | None = None, paths: list[BlindedPath] | None = None) -> Offer:
        """A signed-by-metadata offer of this node (``offer_issuer_id`` is our node id); ``paths``:
        its ``offer_paths`` (a static invoice's offer names a path to our LSP, node/async_draft.py)."""
        chains = None if self.node.network.chain_hash == BITCOIN.chain_hash else [self.node.network.chain_hash]
        draft = build_offer(issuer_id=self.node.node_id, description=description, amount_msat=amount_msat,
                            chains=chains, absolute_expiry=absolute_expiry, quantity_max=quantity_max,
                            issuer=issuer, paths=paths)
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
        request = message.value(INVOICE_REQUEST) or b""
        try:
            static = None if message.path_id is None else self.node.async_draft.static_invoice_for(
                message.path_id, request)
            if static is not None:  # an LSP serving a client's static invoice (draft async payments)
                await self._reply(message, (STATIC_INVOICE, static))
                return
            if message.path_id is not None:
                # A refund asked over one of our return paths (node/return_paths.py) is answered
                # with an invoice signed by that path's own key. Any other: BOLT #12: if `offer_paths`
                # is present: MUST ignore the invoice_request if it did not arrive via one of those
                # paths. otherwise: MUST ignore any invoice_request if it arrived via a blinded path.
                # Our offers name no paths; a path_id means the request came over a path we made (a
                # refund's, a reply path): answering would tie that path to our node id.
                refund_invoice = self.node.return_paths.answer(request, message.path_id)
                if refund_invoice is None:
                    self.node.onion_messages.dropped["invoice_request_via_our_path"] += 1
                    return
                invoice = refund_invoice
            else:
                invoice = self.answer(request)
            record = (INVOICE, invoice.to_tlv())
        except (DecodeError, UsageError) as exc:  # the reason names the field ("offer_metadata: ...")
            record = (INVOICE_ERROR, InvoiceError(error=str(exc)).to_tlv())
        await self._reply(message, record)

    async def _reply(self, message: InboundOnionMessage, record: tuple[int, bytes]) -> None:
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
        amount = invreq.amount_msat if invreq.amount_msat is not None else expected_amount_msat(invreq)
        if amount is None:
            raise UsageError("invreq_amount: needed (we convert no currency)")
        return self.invoice_for(invreq, amount, now)

    def invoice_for(self, invreq: InvoiceRequest, amount_msat: int, now: int, *, node_key: bytes | None = None,
                    via: list[list[bytes]] | None = None) -> Invoice:
        """Sign an invoice for a checked request (or refund) whose payment is already in our store.

        The payment is a blinded-only receivable of :meth:`Node.blinded_payment_paths`: its
        preimage, secret (the ``path_id`` of every path), amount and expiry are committed to
        the store before the invoice leaves, so a restart between invoice and payment settles.
        ``node_key`` signs (default: our node key); ``via``: the paths' routes (default: offer_paths).
        """
        made = self.node.blinded_payment_paths(amount_msat, invreq.offer.description or "",
                                               DEFAULT_RELATIVE_EXPIRY,
                                               via=invoice_path_routes(self.node) if via is None else via)
        paths = [p for p, _ in made.paths]
        payinfos = [i for _, i in made.paths]
        # BOLT #12: if it allows multiple parts to pay the invoice: MUST set `invoice_features`.
        # `features` bit `MPP/optional` (our receiver takes multi-part payments).
        return respond_to_invoice_request(invreq, node_key=node_key or self.node.privkey, payment_hash=made.payment_hash,
                                          created_at=now, paths=paths, blindedpay=payinfos,
                                          relative_expiry=made.expires_at - now, features=[MPP_OPTIONAL])

    # -- payer ---------------------------------------------------------------------------------

    async def fetch_invoice(self, offer: Offer, *, amount_msat: int | None = None, quantity: int | None = None,
                            payer_note: str | None = None, timeout: float = 30.0,
                            attempts: int = 3) -> FetchedInvoice:
        """Request an invoice for ``offer`` over onion messages and check it against our request.

        Raises :class:`PaymentError` when the payee answers with an ``invoice_error`` or an invoice
        that fails a check, TimeoutError when no answer comes, DecodeError/UsageError for an
        offer we must not respond to (expired, another chain) or a request we cannot make.
        """
        fetched = await self.fetch_any(offer, amount_msat=amount_msat, quantity=quantity, payer_note=payer_note,
                                       timeout=timeout, attempts=attempts)
        if isinstance(fetched, FetchedStaticInvoice):
            raise PaymentError("the payee's LSP answered with a static invoice (the payee is offline): "
                               "pay the offer to pay it asynchronously")
        return fetched

    async def fetch_any(self, offer: Offer, *, amount_msat: int | None = None, quantity: int | None = None,
                        payer_note: str | None = None, timeout: float = 30.0,
                        attempts: int = 3) -> FetchedInvoice | FetchedStaticInvoice:
        """:meth:`fetch_invoice`, or the static invoice an offline payee's LSP answered with (unchecked:
        :meth:`~lightspeed.node.async_draft.AsyncDraft.pay_static_invoice` checks it)."""
        now = int(time.time())
        accepted = {self.node.network.chain_hash}
        # BOLT #12: if the current time is after `offer_absolute_expiry`: MUST NOT respond to the offer.
        check_offer_usable(offer, now=now, accepted_chains=accepted)
        chain = self.node.network.chain_hash if offer.chains is not None else None
        invreq = request_invoice(offer, payer_key=os.urandom(32), metadata=os.urandom(16), amount_msat=amount_msat,
                                 quantity=quantity, chain=chain, payer_note=payer_note)
        # BOLT #12: if `offer_paths` is set: MUST send the onion message via any path in `offer_paths`
        # to the final `onion_msg_hop`.`blinded_node_id` in that path; otherwise: MUST send the
        # onion message to `offer_issuer_id`. (Each attempt goes over the next path.)
        destinations: list[bytes | BlindedPath]
        if offer.paths:
            destinations = list(offer.paths)
        else:
            assert offer.issuer_id is not None  # request_invoice refuses an offer with neither
            destinations = [offer.issuer_id]
        reply, used = await self.node.onion_messages.request_any(
            destinations, [(INVOICE_REQUEST, invreq.to_tlv())], timeout=timeout, attempts=attempts)
        if reply.tlv_type == INVOICE_ERROR:
            refusal = InvoiceError.from_tlv(reply.value(INVOICE_ERROR) or b"")
            raise PaymentError(f"the payee refused the invoice request: {refusal.error}")
        if reply.tlv_type == STATIC_INVOICE:
            return FetchedStaticInvoice(reply.value(STATIC_INVOICE) or b"", invreq)
        if reply.tlv_type != INVOICE:
            raise PaymentError(f"the payee answered with a message of type {reply.tlv_type}, not an invoice")
        try:
            invoice = invoice_from_tlv(reply.value(INVOICE) or b"")
            finals = [offer.paths[used].hops[-1].blinded_node_id] if offer.paths else []
            check_invoice_for_request(invoice, invreq, now=int(time.time()), accepted_chains=accepted,
                                      final_blinded_node_ids=finals)
            check_invoice_amount(invoice, invreq)
        except DecodeError as exc:
            raise PaymentError(f"the payee's invoice is not valid for our request: {exc}") from None
        return FetchedInvoice(invoice, invreq)

    async def pay_offer(self, offer: Offer, *, amount_msat: int | None = None, quantity: int | None = None,
                        payer_note: str | None = None, timeout: float = 60.0, fetch_timeout: float = 30.0,
                        attempts: int = 3) -> OfferPayment | StaticInvoicePayment:
        """Fetch an invoice for ``offer`` (:meth:`fetch_invoice`), then pay it over its blinded paths.
        A static invoice (the payee is offline) is paid as the async-payments draft says.

        The payment is recorded like any other (``payment_hash``, status, the ``lni1...`` string),
        so ``trackpayment`` follows it; the result is the proof of payment.
        """
        fetched = await self.fetch_any(offer, amount_msat=amount_msat, quantity=quantity,
                                       payer_note=payer_note, timeout=fetch_timeout, attempts=attempts)
        if isinstance(fetched, FetchedStaticInvoice):  # the payee is offline: draft async payment
            return await self.node.async_draft.pay_static_invoice(offer, fetched.request, fetched.static_invoice,
                                                                  timeout)
        invoice = fetched.invoice
        preimage = await pay_invoice(self.node, invoice, timeout)
        return OfferPayment(invoice, fetched.request, preimage, self.node.payment_fees.get(invoice.payment_hash, 0))


async def pay_invoice(node: Node, invoice: Invoice, timeout: float = 60.0) -> bytes:
    """Pay a checked BOLT 12 invoice over its blinded paths (in parts only if it allows them)."""
    bits = feature_bits(invoice.features or b"")
    # BOLT #12: if `invoice_features` contains the MPP/compulsory bit: MUST pay the invoice via
    # multiple separate blinded paths; otherwise, if it contains the MPP/optional bit: MAY pay
    # the invoice via multiple separate payments; otherwise: MUST NOT use multiple parts.
    max_parts = MAX_PARTS if bits & {MPP_COMPULSORY, MPP_OPTIONAL} else 1
    return await node.pay_blinded(invoice.usable_paths, invoice.amount_msat, invoice.payment_hash,
                                  timeout=timeout, max_parts=max_parts, invoice=invoice.encode(),
                                  separate_paths=MPP_COMPULSORY in bits)


def check_invoice_amount(invoice: Invoice, invreq: InvoiceRequest) -> None:
    """The amount we asked for, or the offer's price for what we asked, and nothing else.

    BOLT #12: if `invreq_amount` is present: MUST reject the invoice if `invoice_amount` is not
    equal to `invreq_amount` (invoice_from_tlv); otherwise: SHOULD confirm authorization if
    `invoice_amount`.`msat` is not within the amount range authorized: the authorized amount is
    the offer's *expected amount*, and we pay no other.
    """
    if invreq.amount_msat is not None:
        return
    expected = expected_amount_msat(invreq)
    if expected is None:
        raise DecodeError("invoice_amount", "the offer's amount is in a currency we cannot check")
    if invoice.amount_msat != expected:
        raise DecodeError("invoice_amount", f"{invoice.amount_msat} msat is not the offer's {expected} msat")
