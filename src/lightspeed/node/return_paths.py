"""Private refunds: a blinded return path carried with a BOLT 11 payment (the "return onion").

Why. A payee that must pay money back (an overpayment, an unused allowance) needs a way to
reach the payer, and a plain invoice or node id would tell it who the payer is. So the payer
attaches, in an odd TLV of the final hop payload (:data:`RETURN_PATH_TLV`), a BOLT 12 offer
made for this one payment:

* ``offer_paths``: one blinded onion-message path to the payer, introduced by one of its
  peers (never by the payer itself: an introduction node is named in clear, so a path the
  payer introduced would name it; a payer without a peer cannot attach a return path);
* ``offer_issuer_id``: a key derived from the node key and a fresh nonce, so no two payments
  share it and none is the node id; invoices for the offer are signed with it;
* ``offer_absolute_expiry``: after it, the payee cannot refund through it any more;
* no amount: the payee asks for an invoice of any amount (each refund part is one invoice).

The payer keeps nothing: ``offer_metadata`` is the nonce and an HMAC over every other field, and
the path's ``path_id`` is an HMAC of the nonce, so an invoice request arriving over the path
proves by itself which return path it is for (after a restart too). Its invoices' payment paths
are introduced by its peers or their neighbours, never by the payer itself.

The payee checks the offer when the payment arrives. A malformed one does not fail the payment:
the path is ignored and the reason logged with the payment hash only. A good one is stored with
the payment hash; :meth:`ReturnPaths.refund` pays parts of what was received to it. Each part
is committed with its refund's payment hash before its first HTLC leaves, and counts towards the
running total (:meth:`ReturnPaths.refunded_msat`) unless its payment failed or never started, so
refunds never exceed what was received, across restarts and concurrent requests (one event loop:
the check and the in-memory reservation run with no ``await`` in between), and a stop before a
part's payment started does not count money that was never sent.
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
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.node.offer_paths import invoice_path_routes
from lightspeed.node.offers_flow import pay_invoice
from lightspeed.offers import (
    Invoice,
    InvoiceRequest,
    Offer,
    build_offer,
    check_invoice_request_for_offer,
    check_offer_usable,
    decode_offer,
    invoice_request_from_tlv,
)
from lightspeed.offers.offer import offer_from_tlv

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.return_paths")

#: The final-hop payload record carrying the return path (an offer's TLV stream). Odd, so a
#: payee that does not know it ignores it; in the experimental range (>= 65537, BOLT #1).
RETURN_PATH_TLV = 65_539
#: How long a return path stays usable by default: long enough for a dispute, not for good.
DEFAULT_RETURN_PATH_EXPIRY = 7 * 86_400
_NONCE = 16


class RefundError(LightspeedError):
    """A refund that cannot be paid; ``field`` names what is wrong (``amount_msat``, ``payment_hash``...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class ReturnRefund:
    """One refund part paid through a return path: the signed invoice and preimage prove it."""

    payment_hash: bytes
    amount_msat: int
    refunded_msat: int  # the running total, this part included
    received_msat: int
    invoice: str
    preimage: bytes


def parse_return_path(value: bytes, chain_hash: bytes, now: int) -> Offer:
    """The offer in a :data:`RETURN_PATH_TLV` record, checked; DecodeError names what is wrong."""
    offer = offer_from_tlv(value)  # every reader rule of an offer
    if not offer.paths:
        raise DecodeError("offer_paths", "a return path must be blinded")
    if offer.issuer_id is None:
        raise DecodeError("offer_issuer_id", "a return path needs its (fresh) signing key")
    if offer.absolute_expiry is None:
        raise DecodeError("offer_absolute_expiry", "a return path must expire")
    if offer.amount_msat is not None or offer.currency is not None:
        raise DecodeError("offer_amount", "a return path takes any amount: it must name none")
    check_offer_usable(offer, now=now, accepted_chains={chain_hash})
    return offer


class ReturnPaths:
    """Both roles (``node.return_paths``): the payer's return paths, the payee's refunds through them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._key = hashlib.sha256(b"lightspeed return path" + node.privkey).digest()
        self._reserved: dict[bytes, int] = {}  # payment hash -> refund amounts checked, invoice not yet fetched
        self._in_flight: set[bytes] = set()  # refund payment hashes committed whose payment is starting

    # -- the payer: make a return path, answer invoice requests over it ----------------------------

    def _derive(self, label: bytes, nonce: bytes) -> bytes:
        return hmac.new(self._key, label + nonce, "sha256").digest()

    def _tag(self, nonce: bytes, offer: Offer) -> bytes:
        return self._derive(b"tag", nonce + replace(offer, metadata=None).to_tlv())

    def create(self, *, expiry: int = DEFAULT_RETURN_PATH_EXPIRY, description: str = "refund",
               nonce: bytes | None = None) -> Offer:
        """A fresh return path to us (see the module docstring). UsageError without a peer.

        ``nonce`` (16 bytes, default random): a caller that must sign later with the path's key
        without keeping the path (a multi-hash refund declaration) derives it, see :meth:`nonce_for`."""
        node = self.node
        if expiry <= 0:
            raise UsageError("return_path_expiry: must be positive")
        peers = [p for p in node._peers if node.onion_messages._onion_peer(p) is not None]
        if not peers:
            raise UsageError("return_path: no connected peer to introduce a blinded path to us "
                             "(a path we introduced ourselves would name our node id)")
        if nonce is None:
            nonce = os.urandom(_NONCE)
        elif len(nonce) != _NONCE:
            raise UsageError(f"nonce: must be {_NONCE} bytes")
        path = node.onion_messages.reply_path(self._derive(b"path", nonce))
        signing_key = self._derive(b"sign", nonce)
        chains = None if node.network.chain_hash == BITCOIN.chain_hash else [node.network.chain_hash]
        draft = build_offer(issuer_id=pubkey_from_privkey(signing_key), paths=[path], description=description,
                            chains=chains, absolute_expiry=int(time.time()) + expiry)
        return replace(draft, metadata=nonce + self._tag(nonce, draft))

    def nonce_for(self, label: bytes) -> bytes:
        """A nonce derived from ``label`` (a request id): the same label gives the same signing key."""
        return self._derive(b"nonce", label)[:_NONCE]

    def signing_key(self, nonce: bytes) -> bytes:
        """The secret of the ``offer_issuer_id`` of our return paths made with ``nonce``."""
        return self._derive(b"sign", nonce)

    def nonce_of(self, offer: Offer) -> bytes | None:
        """The nonce of a return path we made, or None (not ours, or altered)."""
        metadata = offer.metadata or b""
        nonce = metadata[:_NONCE]
        if len(metadata) == _NONCE + 32 and hmac.compare_digest(metadata[_NONCE:], self._tag(nonce, offer)):
            return nonce
        return None

    def answer(self, invoice_request_tlv: bytes, path_id: bytes) -> Invoice | None:
        """Our invoice for a refund request that came over our return path ``path_id``; None when
        it is not a request for one of our return paths over that path (to be ignored)."""
        try:
            invreq: InvoiceRequest = invoice_request_from_tlv(invoice_request_tlv)
        except DecodeError:
            return None
        nonce = None if invreq.is_refund else self.nonce_of(invreq.offer)
        # BOLT #12: if `offer_paths` is present: MUST ignore the invoice_request if it did not arrive
        # via one of those paths (our path_id is the HMAC of the offer's nonce).
        if nonce is None or not hmac.compare_digest(path_id, self._derive(b"path", nonce)):
            return None
        now = int(time.time())
        check_invoice_request_for_offer(invreq, invreq.offer, now=now,
                                        accepted_chains={self.node.network.chain_hash})
        if invreq.amount_msat is None:
            raise UsageError("invreq_amount: a refund names its amount")
        routes = [r for r in invoice_path_routes(self.node) if r]  # never a path introduced by us
        if not routes:
            raise UsageError("invoice_paths: no ready channel to receive the refund through")
        return self.node.offers.invoice_for(invreq, invreq.amount_msat, now, node_key=self._derive(b"sign", nonce),
                                            via=routes)

    # -- the payee: keep the return path with the payment, refund through it ----------------------

    def on_final_payload(self, payment_hash: bytes, custom_records: tuple[tuple[int, bytes], ...]) -> None:
        """Store the return path a final payload carries (once per payment); ignore a bad one."""
        value = next((v for t, v in custom_records if t == RETURN_PATH_TLV), None)
        if value is None:
            return
        store = self.node.store
        if store.invoice(payment_hash) is None:
            return  # not a payment of ours (it will be refused): keep nothing for it
        if store.return_path(payment_hash) is not None:
            return  # another part of the same payment carried it
        try:
            offer = parse_return_path(value, self.node.network.chain_hash, int(time.time()))
        except DecodeError as exc:
            # The payment itself is fine: only the way back is unusable. Log nothing that could
            # identify the payer (the record is the payer's, not ours to keep).
            log.info("payment %s: ignored a malformed return path: %s", payment_hash.hex(), exc)
            return
        with store.transaction():
            store.put_return_path(payment_hash, offer.encode())

    def refunded_msat(self, payment_hash: bytes) -> int:
        """What counts as refunded of ``payment_hash``: parts whose payment succeeded or may still
        settle, parts being set up now (in memory), never a part whose payment failed or never
        started (a stop before its first HTLC left: nothing was paid, so nothing is counted)."""
        store = self.node.store
        total = self._reserved.get(payment_hash, 0)
        for refund_hash, amount in store.return_refunds(payment_hash):
            payment = store.payment(refund_hash)
            if payment is None:
                total += amount if refund_hash in self._in_flight else 0
            elif payment.status != "failed":
                total += amount
        return total

    def _reserve(self, payment_hash: bytes, amount_msat: int, via: Offer | None = None) -> tuple[Offer, int]:
        """Check a refund and reserve its amount (in memory). No await: atomic in the event loop."""
        store = self.node.store
        if amount_msat <= 0:
            raise RefundError("amount_msat", "must be positive")
        invoice = store.invoice(payment_hash)
        if invoice is None or invoice.status != "paid":
            raise RefundError("payment_hash", "no payment was received with this hash")
        text = store.return_path(payment_hash)
        if text is None:
            raise RefundError("payment_hash", "the payment carried no return path: there is no way to refund it")
        offer = decode_offer(text) if via is None else via
        now = int(time.time())
        if offer.is_expired(now):
            raise RefundError("return_path", f"expired at {offer.absolute_expiry} (now {now}): it cannot be "
                                             "refunded through it any more")
        received = invoice.received_msat
        refunded = self.refunded_msat(payment_hash)
        if refunded + amount_msat > received:
            raise RefundError("amount_msat", f"{amount_msat} msat is more than the {received - refunded} msat "
                                             f"left to refund (received {received}, refunded {refunded})")
        self._reserved[payment_hash] = self._reserved.get(payment_hash, 0) + amount_msat
        return offer, received

    def _unreserve(self, payment_hash: bytes, amount_msat: int) -> None:
        left = self._reserved.get(payment_hash, 0) - amount_msat
        if left > 0:
            self._reserved[payment_hash] = left
        else:
            self._reserved.pop(payment_hash, None)

    async def refund(self, payment_hash: bytes, amount_msat: int, *, timeout: float = 60.0,
                     fetch_timeout: float = 30.0, via: Offer | None = None) -> ReturnRefund:
        """Pay ``amount_msat`` of the payment ``payment_hash`` back through its return path.

        ``via``: another return path to pay through (checked by the caller: a multi-hash refund
        declaration signed by the key the payment's own return path committed to); the payment
        must still have carried one.

        RefundError names the field (``amount_msat``: more than is left; ``payment_hash``: not
        received, or no return path; ``return_path``: expired). PaymentError: the refund did not
        go through (it counts no more, unless its payment is still pending and may settle).
        """
        offer, received = self._reserve(payment_hash, amount_msat, via)
        try:
            fetched = await self.node.offers.fetch_invoice(offer, amount_msat=amount_msat, timeout=fetch_timeout)
        except TimeoutError:
            raise PaymentError("the payer's node did not answer over the return path") from None
        finally:
            self._unreserve(payment_hash, amount_msat)  # from here on, the part's record counts
        invoice = fetched.invoice
        store = self.node.store
        # The part is committed with its refund payment hash before any HTLC leaves; it counts while
        # in flight (here), then by its payment's record (pending and succeeded count, failed not).
        with store.transaction():
            store.put_return_refund(payment_hash, invoice.payment_hash, amount_msat)
        self._in_flight.add(invoice.payment_hash)
        try:
            preimage = await pay_invoice(self.node, invoice, timeout)
        finally:
            self._in_flight.discard(invoice.payment_hash)
        return ReturnRefund(payment_hash, amount_msat, self.refunded_msat(payment_hash), received,
                            invoice.encode(), preimage)
