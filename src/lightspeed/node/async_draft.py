"""Asynchronous payments in the node, flow 2: the draft spec (bolts#1149, as LDK ships it).

Three roles, one module (docs/async-payments.md, "Flow 2"):

* Payee B, while online: :meth:`AsyncDraft.publish_static_invoice` makes an offer whose one
  ``offer_paths`` entry ends at its LSP (``path_id`` = a random slot), signs a static invoice for it
  (payment paths through the LSP, ``held_htlc_available_paths`` through the LSP to B) and has the
  LSP keep it (``serve_static_invoice``, answered once durable). Later, B answers
  ``held_htlc_available`` over one of its own held paths with ``release_held_htlc`` and accepts
  the payment: its preimage is the payer's (keysend record in the blinded final payload), the
  ``path_id`` of the payment path (a MAC of ours over the price) says it pays our static invoice.
* B's LSP: answers an ``invoice_request`` arriving over a slot's path with the stored static
  invoice (``static_invoice``, 70), whether B is online or not (as LDK's static invoice server).
* Payer A: on a ``static_invoice`` answer, draws the preimage, sends its LSP the held paths
  (``hold_htlc_paths``, signed) and pays over the invoice's blinded paths with ``hold_htlc``
  (75537) set on its first hop. A's LSP holds that HTLC (the same :class:`HoldBook`, limits,
  deadlines and store as flow 1), sends ``held_htlc_available`` (72) along a held path with a
  reply path to itself whose ``path_id`` is a release token (MAC'd, single use), and forwards
  the HTLC when ``release_held_htlc`` (74) comes back with a token that opens.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightspeed.asyncpay import draft_messages as dm
from lightspeed.asyncpay import messages as m
from lightspeed.asyncpay.policy import HoldRefused, ReleaseRefused
from lightspeed.asyncpay.static_invoice import StaticInvoice, sign_static_invoice
from lightspeed.channel.htlc_log import LoggedHtlc
from lightspeed.codec.tlv import decode_tlv_stream
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.invoice import build_invoice
from lightspeed.invoice.encode import DEFAULT_FEATURES as DEFAULT_INVOICE_FEATURES
from lightspeed.node.blinded import MIN_FINAL_CLTV_EXPIRY_DELTA
from lightspeed.node.blinded_incoming import BlindedFinal
from lightspeed.node.invoices import ROUTE_BLINDING_BIT
from lightspeed.node.offers_flow import MAX_PARTS
from lightspeed.node.onion_messenger import PATH_PADDING, InboundOnionMessage
from lightspeed.node.outcomes import (
    HtlcHeld,
    HtlcKey,
    HtlcReleased,
    NodeEvent,
)
from lightspeed.offers import InvoiceRequest, Offer, expected_amount_msat, invoice_request_from_tlv
from lightspeed.offers.tlv_fields import (
    INVOICE_BLINDEDPAY,
    INVOICE_FEATURES,
    INVOICE_PATHS,
    MPP_COMPULSORY,
    MPP_OPTIONAL,
    OFFER_PATHS,
    BlindedPayInfo,
    feature_bits,
    features_to_bytes,
    read_blindedpay,
)
from lightspeed.onion.blinding import BlindedPath
from lightspeed.onion.message import create_reply_path
from lightspeed.onion.payload import KEYSEND_PREIMAGE
from lightspeed.payments.receiver import Receivable
from lightspeed.store import AsyncPaymentRecord, InvoiceRecord

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.asyncpay")

#: Static invoices stay valid this long by default (BOLT 12 ``invoice_relative_expiry``).
STATIC_INVOICE_EXPIRY = 24 * 3600
#: How long a static-invoice payment's parts may take to all arrive once the first did.
PART_WINDOW_SECONDS = 3600
#: Attempts (one a second) at sending held_htlc_available / release_held_htlc (no path yet).
SEND_ATTEMPTS = 30
#: Blocks a held payment adds to the payee's expiry: it must still meet the payee's minimum final
#: expiry when released, up to a day of blocks later (LDK adds a buffer for held HTLCs likewise).
HELD_CLTV_BUFFER = 144
#: The most payments one client may have announced held paths for at once.
MAX_WAKES_PER_CLIENT = 16


@dataclass
class _Wake:
    """LSP: where to wake the payee of a client's held payment, and the payment's release token."""

    paths: tuple[BlindedPath, ...]
    token: bytes | None = None
    tag: bytes | None = None
    sent: bool = False
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class StaticInvoicePayment:
    """A paid static invoice. The preimage is the payer's own: unlike a BOLT 12 invoice, the pair
    proves nothing to a third party (the draft's known limit), only that the payee settled."""

    invoice: StaticInvoice
    request: InvoiceRequest
    payment_hash: bytes
    preimage: bytes
    amount_msat: int


@dataclass(frozen=True)
class PreparedStaticPayment:
    """A checked static invoice and the payment we will make for it (its hash known before it starts)."""

    invoice: StaticInvoice
    request: InvoiceRequest
    payment_hash: bytes
    preimage: bytes
    amount_msat: int
    paths: tuple[tuple[BlindedPath, BlindedPayInfo], ...]


class AsyncDraft:
    """``node.async_draft``: flow 2 for every node; the LSP parts act only with ``node.async_lsp``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._key = hashlib.sha256(b"lightspeed/async draft" + node.privkey).digest()
        self.holding: set[bytes] = set()  # payer: hashes whose first-hop HTLCs carry hold_htlc
        self._flagged: set[HtlcKey] = set()  # LSP: incoming HTLCs that carried hold_htlc
        self._wakes: dict[tuple[bytes, bytes], _Wake] = {}  # LSP: (client, payment hash) -> held paths
        self.refused_releases = 0  # forged, replayed or for nothing held (each also logged)
        messenger = node.onion_messages
        messenger.register(dm.HOLD_HTLC_PATHS, self._on_hold_paths)
        messenger.register(dm.SERVE_STATIC_INVOICE, self._on_serve)
        messenger.register(m.RELEASE_HELD_HTLC, self._on_release)
        messenger.register(m.HELD_HTLC_AVAILABLE, self._on_held_available)

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, label + data, "sha256").digest()[:16]

    # -- payee --------------------------------------------------------------------------------

    async def publish_static_invoice(self, lsp_id: bytes, description: str, amount_msat: int, *,
                                     relative_expiry: int = STATIC_INVOICE_EXPIRY, absolute_expiry: int | None = None,
                                     issuer: str | None = None, timeout: float = 10.0) -> tuple[Offer, StaticInvoice]:
        """Make an offer the LSP ``lsp_id`` answers for us while we are offline (draft step 1).

        Returns once the LSP confirmed it keeps the static invoice (TimeoutError if it never did:
        not an LSP, or we are not its registered client)."""
        node = self.node
        if not 0 < amount_msat < 1 << 64:
            raise UsageError("amount_msat: a static invoice needs the offer's price (a positive amount)")
        if relative_expiry <= 0:
            raise UsageError("relative_expiry: must be positive")
        slot = os.urandom(dm.SLOT_SIZE)
        offer_path = create_reply_path(os.urandom(32), [lsp_id], slot, padding_to=PATH_PADDING)
        offer = node.offers.create_offer(description, amount_msat, paths=[offer_path], absolute_expiry=absolute_expiry,
                                         issuer=issuer)
        nonce = amount_msat.to_bytes(8, "big") + os.urandom(8)
        secret = nonce + self._mac(b"pay", nonce)  # path_id of the payment paths: price + our MAC
        # The paths' max_cltv_expiry covers the invoice's life plus a payer's HELD_CLTV_BUFFER (and as much again).
        made = node.blinded.payment_paths(amount_msat, description, relative_expiry + 2 * HELD_CLTV_BUFFER * 600,
                                          via=[[lsp_id]], secret=secret)
        held_nonce = os.urandom(16)
        held_path = create_reply_path(os.urandom(32), [lsp_id, node.node_id],
                                      held_nonce + self._mac(b"held", held_nonce), padding_to=PATH_PADDING)
        offer_records = list(decode_tlv_stream(offer.to_tlv(), None, field="offer").items())
        static = sign_static_invoice(offer_records, b"".join(p.to_bytes() for p, _ in made.paths),
                                     b"".join(i.to_bytes() for _, i in made.paths), [held_path],
                                     int(time.time()), node.privkey, relative_expiry,
                                     features=features_to_bytes([MPP_OPTIONAL]))
        request = dm.ServeStaticInvoice(slot, static.to_bytes())
        reply = await node.onion_messages.request(lsp_id, [(dm.SERVE_STATIC_INVOICE, request.to_bytes())],
                                                  timeout=timeout)
        if reply.value(dm.STATIC_INVOICE_PERSISTED) != slot:
            raise DecodeError("static_invoice_persisted", "the LSP's answer is not for our slot")
        return offer, static

    def static_receivable(self, read: BlindedFinal, payment_hash: bytes) -> Receivable | None:
        """A payment of one of our static invoices arriving (in the step's transaction), or None.

        Its payment path's ``path_id`` must be ours (price and MAC), and its keysend preimage
        must hash to the HTLC's payment hash; the payment is then kept like an invoice of ours
        (store first), so MPP parts, a restart and the double-pay guard work as for any other."""
        node = self.node
        path_id = read.path_id
        if path_id is None or len(path_id) != 32 or not hmac.compare_digest(path_id[16:],
                                                                            self._mac(b"pay", path_id[:16])):
            return None
        preimage = dict(read.payload.custom_records).get(KEYSEND_PREIMAGE)
        if preimage is None or len(preimage) != 32 or sha256(preimage) != payment_hash:
            return None
        if node.store.invoice(payment_hash) is not None:
            return None  # paid already, or a hash of another invoice of ours
        amount = int.from_bytes(path_id[:8], "big")
        now = int(time.time())
        invoice = build_invoice(network=node.network, amount_msat=amount, description="static invoice payment",
                                payment_hash=payment_hash, payment_secret=path_id, timestamp=now,
                                expiry=PART_WINDOW_SECONDS, payee=None,
                                min_final_cltv_expiry=MIN_FINAL_CLTV_EXPIRY_DELTA,
                                features=DEFAULT_INVOICE_FEATURES | {ROUTE_BLINDING_BIT}).sign(node.privkey)
        with node.store.transaction():
            node.store.put_invoice(InvoiceRecord(payment_hash, invoice.encode(), preimage, path_id, amount,
                                                 expires_at=invoice.expires_at))
        receivable = Receivable(payment_hash, path_id, amount, MIN_FINAL_CLTV_EXPIRY_DELTA, invoice.expires_at,
                                preimage, blinded=True)
        node.invoices.added(receivable)
        log.info("paid through our static invoice: %s", payment_hash.hex())
        return receivable

    async def _on_held_available(self, inbound: InboundOnionMessage) -> None:
        """Payee: a payment waits at the payer's LSP; release it over the reply path (draft step 3)."""
        path_id = inbound.path_id
        if (path_id is None or len(path_id) != 32
                or not hmac.compare_digest(path_id[16:], self._mac(b"held", path_id[:16]))):
            log.warning("held_htlc_available ignored: not over a held path of ours")
            return
        if inbound.reply_path is None:
            log.warning("held_htlc_available ignored: no reply path to release over")
            return
        await self._send_retrying(lambda: self.node.onion_messages.reply(inbound, [(m.RELEASE_HELD_HTLC, b"")]),
                                  "release_held_htlc")

    async def _send_retrying(self, send: Callable[[], Awaitable[object]], what: str) -> bool:
        """Just back online we may know no path yet (gossip syncing): try for a while."""
        for _ in range(SEND_ATTEMPTS):
            try:
                await send()
                return True
            except LightspeedError as exc:
                log.info("%s not sent yet: %s", what, exc)
                await asyncio.sleep(1.0)
        log.warning("%s never sent: no path", what)
        return False

    # -- payee's LSP: the static invoice server ------------------------------------------------

    async def _on_serve(self, inbound: InboundOnionMessage) -> None:
        lsp = self.node.async_lsp
        value = inbound.value(dm.SERVE_STATIC_INVOICE)
        if lsp is None or value is None:
            return
        now = int(time.time())
        try:
            request = dm.ServeStaticInvoice.from_bytes(value)
            static = StaticInvoice.from_bytes(request.invoice)  # signed by its node id: B's own
        except DecodeError as exc:
            log.warning("serve_static_invoice refused: %s", exc)
            return
        if request.slot not in self._slots_for_us(static):
            # The slot must be the path_id of the offer's path to us: a signed static invoice (public
            # to anyone with the offer) cannot be filed under other slots to use up its payee's quota.
            log.warning("serve_static_invoice refused: the offer has no path to us with that slot")
            return
        if lsp.store.registration(static.node_id) is None:
            log.warning("serve_static_invoice refused: %s is not a registered client", static.node_id.hex())
            return
        if static.is_expired(now):
            log.warning("serve_static_invoice refused: the static invoice has expired")
            return
        if not lsp.store.put_static_invoice(request.slot, static.node_id, request.invoice, now):
            log.warning("serve_static_invoice refused: slot taken by another client, or too many invoices")
            return
        log.info("serving a static invoice for %s", static.node_id.hex())
        try:
            await self.node.onion_messages.reply(inbound, [(dm.STATIC_INVOICE_PERSISTED, request.slot)])
        except LightspeedError as exc:
            log.info("static_invoice_persisted not sent: %s", exc)

    def _slots_for_us(self, static: StaticInvoice) -> set[bytes]:
        """The path_ids of the offer's one-hop paths that end at us (as our hop's data says)."""
        raw = dict(static.records).get(OFFER_PATHS, b"")
        slots: set[bytes] = set()
        offset = 0
        try:
            while offset < len(raw):
                path, offset = BlindedPath.parse(raw, offset)
                if path.first_node_id == self.node.node_id and len(path.hops) == 1:
                    _, data = self.node.onion_messages._skip_own_hop(path)
                    if data.path_id is not None:
                        slots.add(data.path_id)
        except (DecodeError, UsageError):
            return slots
        return slots

    def static_invoice_for(self, path_id: bytes, invoice_request: bytes) -> bytes | None:
        """LSP: the static invoice to answer an invoice request that came over a slot's path, or None."""
        lsp = self.node.async_lsp
        found = None if lsp is None or len(path_id) != dm.SLOT_SIZE else lsp.store.static_invoice(path_id)
        if found is None:
            return None
        try:
            static = StaticInvoice.from_bytes(found[1])
            invreq = invoice_request_from_tlv(invoice_request)
            asked = decode_tlv_stream(invreq.offer.to_tlv(), None, field="offer")
        except DecodeError as exc:
            log.info("invoice request over a static-invoice path ignored: %s", exc)
            return None
        if static.is_expired(int(time.time())) or asked != {t: v for t, v in static.records if 1 <= t <= 79}:
            log.info("invoice request over a static-invoice path ignored: another offer, or the invoice expired")
            return None
        return found[1]

    # -- payer --------------------------------------------------------------------------------

    async def pay_static_invoice(self, offer: Offer, invreq: InvoiceRequest, raw: bytes,
                                 timeout: float = 60.0) -> StaticInvoicePayment:
        """Pay the static invoice the payee's LSP answered our request with (draft step 2).

        PaymentError: the invoice is not valid for this offer, or no LSP of ours could be told.
        The payment is recorded like any other; it ends succeeded (the payee released and settled)
        or failed (released nowhere before the LSP's deadline: our funds come back)."""
        return await self.pay_prepared(self.prepare(offer, invreq, raw), timeout)

    def prepare(self, offer: Offer, invreq: InvoiceRequest, raw: bytes) -> PreparedStaticPayment:
        """Check the static invoice and draw the payment's preimage (PaymentError: not valid)."""
        try:
            static = StaticInvoice.from_bytes(raw)
            check_static_invoice(static, offer, int(time.time()))
            paths = _payment_paths(static)
        except DecodeError as exc:
            raise PaymentError(f"the payee's static invoice is not valid for this offer: {exc}") from None
        amount = invreq.amount_msat if invreq.amount_msat is not None else expected_amount_msat(invreq)
        if amount is None:
            raise PaymentError("the offer's amount is in a currency we cannot convert")
        preimage = os.urandom(32)
        return PreparedStaticPayment(static, invreq, sha256(preimage), preimage, amount, tuple(paths))

    async def pay_prepared(self, prepared: PreparedStaticPayment, timeout: float = 60.0) -> StaticInvoicePayment:
        """Tell our LSP where to wake the payee, then pay with ``hold_htlc`` set (TimeoutError: still
        pending after ``timeout``; it goes on and ends settled or failed, as any payment)."""
        node = self.node
        static, payment_hash = prepared.invoice, prepared.payment_hash
        request = dm.HoldHtlcPaths.sign(payment_hash, static.held_htlc_available_paths[:dm.MAX_HELD_PATHS],
                                        node.privkey)
        # Our LSP is the peer our first hop goes to: tell each channel peer (one, for a phone).
        told: list[bytes] = []
        for peer_id in dict.fromkeys(node._channel_node[c] for c in node.channels if node.channel_is_ready(c)):
            try:
                await node.onion_messages.send(peer_id, [(dm.HOLD_HTLC_PATHS, request.to_bytes())])
                told.append(peer_id)
            except LightspeedError as exc:
                log.info("hold_htlc_paths not sent to %s: %s", peer_id.hex(), exc)
        if not told:
            raise PaymentError("no channel peer (LSP) could be asked to hold the payment")
        # Durable before the HTLC leaves, as flow 1: AsyncPaymentSucceeded comes once when the payment
        # is recorded succeeded, also after a restart of ours (AsyncPayRuntime.payment_succeeded).
        with node.store.transaction():
            node.store.put_async_payment(AsyncPaymentRecord(payment_hash, told[0], prepared.amount_msat,
                                                            int(time.time())))
        self.holding.add(payment_hash)  # kept while parts may still be sent (the payment outlives a timeout)
        # BOLT 12 features, as for any invoice: parts only if the invoice allows them. Every part
        # carries hold_htlc; the LSP holds them under one release token and releases them together.
        bits = feature_bits(dict(static.records).get(INVOICE_FEATURES, b""))
        try:
            got = await node.blinded.pay(prepared.paths, prepared.amount_msat, payment_hash, timeout,
                                         max_parts=MAX_PARTS if bits & {MPP_OPTIONAL, MPP_COMPULSORY} else 1,
                                         separate_paths=MPP_COMPULSORY in bits,
                                         final_records=((KEYSEND_PREIMAGE, prepared.preimage),),
                                         extra_cltv=HELD_CLTV_BUFFER)
        except (PaymentError, UsageError):
            self.holding.discard(payment_hash)
            raise
        self.holding.discard(payment_hash)  # AsyncPaymentSucceeded came with the payment's success
        return StaticInvoicePayment(static, prepared.request, payment_hash, got, prepared.amount_msat)

    # -- payer's LSP ----------------------------------------------------------------------------

    async def _on_hold_paths(self, inbound: InboundOnionMessage) -> None:
        lsp = self.node.async_lsp
        value = inbound.value(dm.HOLD_HTLC_PATHS)
        if lsp is None or value is None:
            return
        try:
            request = dm.HoldHtlcPaths.from_bytes(value)
        except DecodeError as exc:
            log.warning("hold_htlc_paths refused: %s", exc)
            return
        if request.client_id not in set(self.node._channel_node.values()):
            # Only a channel peer can send us the HTLC it announces (and any key can sign): bounded by peers.
            log.warning("hold_htlc_paths refused: %s has no channel with us", request.client_id.hex())
            return
        horizon = time.monotonic() - lsp.book.limits.max_hold_seconds
        for old in [k for k, w in self._wakes.items() if w.at < horizon]:
            del self._wakes[old]
        mine = [k for k in self._wakes if k[0] == request.client_id]
        if len(mine) >= MAX_WAKES_PER_CLIENT:  # the oldest goes: its HTLC, if any, fails back at its deadline
            oldest = min(mine, key=lambda k: self._wakes[k].at)
            del self._wakes[oldest]
        self._wakes.setdefault((request.client_id, request.payment_hash), _Wake(request.paths))

    def flag_incoming(self, key: HtlcKey) -> None:
        """An incoming ``update_add_htlc`` carried ``hold_htlc`` (only an LSP acts on it)."""
        if self.node.async_lsp is not None:
            self._flagged.add(key)

    def flagged(self, key: HtlcKey) -> bool:
        return key in self._flagged

    def intercept(self, key: HtlcKey, client: bytes, htlc: LoggedHtlc, shared_secret: bytes, height: int,
                  received: list[NodeEvent]) -> bool:
        """A new HTLC with ``hold_htlc`` from ``client``: hold it and wake its payee (True), fail it
        back (True), or forward it (False: a late part of a payment already released)."""
        from lightspeed.node.async_runtime import htlc_key  # runtime imports us: import here

        node = self.node
        lsp = node.async_lsp
        assert lsp is not None
        self._flagged.discard(key)
        wake = self._wakes.get((client, htlc.payment_hash))
        if wake is None:
            log.warning("HTLC %s carries hold_htlc but its payer sent no held_htlc_available paths: failed back",
                        htlc_key(key))
            node.asyncpay._fail_back(key, htlc, shared_secret)
            return True
        if wake.tag is not None and lsp.book.released_under(wake.tag):
            return False  # an MPP part arriving after the release follows the others
        if wake.token is None:
            wake.token, wake.tag = lsp.issue_release_token(f"draft:{client.hex()}:{htlc.payment_hash.hex()}")
        try:
            record = lsp.on_incoming_htlc(htlc_key(key), client, htlc.payment_hash, htlc.amount_msat,
                                          htlc.cltv_expiry, now=int(time.time()), block_height=height,
                                          release_tag=wake.tag)
        except HoldRefused as exc:
            log.warning("HTLC %s not held, failed back: %s", htlc_key(key), exc.reason)
            node.asyncpay._fail_back(key, htlc, shared_secret)
            return True
        assert record is not None  # a release tag was given
        received.append(HtlcHeld(htlc.payment_hash, htlc.amount_msat, client))
        node._handled.add(key)  # undecided: re-run on release or deadline
        if not wake.sent:
            wake.sent = True
            node._spawn(self._send_held_available(wake))
        return True

    async def _send_held_available(self, wake: _Wake) -> None:
        """Draft step 2: tell the payee, along its held path, with a reply path whose path_id releases."""
        assert wake.token is not None
        reply_path = create_reply_path(os.urandom(32), [self.node.node_id], wake.token, padding_to=PATH_PADDING)

        async def send() -> None:
            problems = []
            for path in wake.paths:
                try:
                    await self.node.onion_messages.send(path, [(m.HELD_HTLC_AVAILABLE, b"")], reply_path=reply_path)
                    return
                except LightspeedError as exc:
                    problems.append(str(exc))
            raise UsageError("; ".join(problems))

        await self._send_retrying(send, "held_htlc_available")

    async def _on_release(self, inbound: InboundOnionMessage) -> None:
        lsp = self.node.async_lsp
        if lsp is None:
            return
        try:
            released = lsp.on_release_held_htlc(inbound.path_id, now=int(time.time()),
                                                block_height=self.node.chain.tip()[0])
        except ReleaseRefused:  # AsyncLsp logged why
            self.refused_releases += 1
            return
        await self.node.asyncpay._rerun(released, [HtlcReleased(r.payment_hash, r.amount_msat, r.client_id)
                                                   for r in released])


def check_static_invoice(static: StaticInvoice, offer: Offer, now: int) -> None:
    """The payer's checks: the offer's own records, signed by the offer's issuer, not expired."""
    asked = decode_tlv_stream(offer.to_tlv(), None, field="offer")
    if asked != {t: v for t, v in static.records if 1 <= t <= 79}:
        raise DecodeError("static_invoice", "its offer records are not the offer's")
    if offer.issuer_id is None or static.node_id != offer.issuer_id:
        raise DecodeError("invoice_node_id", "is not the offer's issuer id")
    if static.is_expired(now):
        raise DecodeError("invoice_relative_expiry", "the static invoice has expired")


def _payment_paths(static: StaticInvoice) -> list[tuple[BlindedPath, BlindedPayInfo]]:
    records = dict(static.records)
    paths: list[BlindedPath] = []
    offset = 0
    while offset < len(records[INVOICE_PATHS]):
        path, offset = BlindedPath.parse(records[INVOICE_PATHS], offset)
        paths.append(path)
    infos = read_blindedpay(records[INVOICE_BLINDEDPAY], "invoice_blindedpay")
    if len(infos) != len(paths):
        raise DecodeError("invoice_blindedpay", f"{len(infos)} payinfo for {len(paths)} paths")
    return [(p, i) for p, i in zip(paths, infos, strict=True) if i.usable]
