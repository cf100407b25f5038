"""Our unpaid invoices for the receiver: looked up when an HTLC asks, expired ones pruned.

Why: the node used to decode every unpaid invoice at start (a signature recovery each:
20,000 invoices took seconds) and kept every one forever, while a pay-per-call server
issues one per allowance offer. Now:

* Nothing is decoded at start. Before an HTLC addressed to us reaches the
  :class:`~lightspeed.payments.receiver.Receiver`, :meth:`InvoiceBook.load_for` asks the store
  for the invoice by payment hash (and, for an AMP shard, by payment secret) and hands it to
  the receiver, which keeps at most ``cache_size`` of them (least recently used leave first;
  one evicted is simply looked up again at its next HTLC). The receiver stays sans-IO: the
  runtime gives it the invoice as an input, it never calls back.
* Unpaid invoices that expired more than ``grace_s`` ago are deleted at start and then
  hourly. Until then an expired invoice is still found, so a late HTLC is failed as the
  receiver fails any expired invoice (BOLT 4 ``incorrect_or_unknown_payment_details``); one
  with an HTLC still in a channel is kept whatever its age. Paid invoices are never pruned:
  they are the record of what was received (and the double-pay guard).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from lightspeed.invoice import decode
from lightspeed.payments.amp import AMP_FEATURE_BITS
from lightspeed.payments.receiver import Receivable, Receiver
from lightspeed.store.base import InvoiceRecord, Store

ROUTE_BLINDING_BIT = 24  # set (required) in the stored record of a payment made for blinded paths
CACHE_SIZE = 1024  # unpaid invoices kept decoded in the receiver
PRUNE_GRACE_S = 24 * 3600  # an unpaid invoice stays this long after it expired
PRUNE_INTERVAL_S = 3600


def receivable(record: InvoiceRecord) -> Receivable:
    """What the receiver needs of one of our invoices (decodes the BOLT 11 string)."""
    invoice = decode(record.invoice)
    amp = AMP_FEATURE_BITS[0] in invoice.features  # paid only by AMP shards; no preimage of its own
    hold = record.preimage == b"" and not amp  # a hold invoice: created from a hash, the preimage later
    blinded = ROUTE_BLINDING_BIT in invoice.features  # node.blinded: paid only over our blinded paths
    return Receivable(record.payment_hash, record.payment_secret, record.amount_msat,
                      invoice.min_final_cltv_expiry, invoice.expires_at,
                      None if hold or amp else record.preimage, hold, amp, blinded)


class InvoiceBook:
    """Feeds the receiver the invoices its HTLCs name, from the store (see the module docstring)."""

    def __init__(self, store: Store, receiver: Receiver, cache_size: int = CACHE_SIZE,
                 grace_s: int = PRUNE_GRACE_S) -> None:
        self.store, self.receiver = store, receiver
        self.cache_size, self.grace_s = cache_size, grace_s
        self.decoded = 0  # invoice strings decoded so far (a start decodes none)
        self.pruned = 0
        self._last_prune: float | None = None

    def start(self, now: float, keep: Collection[bytes]) -> None:
        """At node start: the paid hashes (the double-pay guard), old records' expiry, one prune."""
        self.receiver.settled.update(self.store.paid_invoice_hashes())
        legacy = self.store.invoices_without_expiry()  # written before expiry was recorded: once
        if legacy:
            with self.store.transaction():
                for record in legacy:
                    self.decoded += 1
                    self.store.set_invoice_expiry(record.payment_hash, decode(record.invoice).expires_at)
        self.prune(now, keep)

    def added(self, item: Receivable) -> None:
        """A new invoice (already committed): the receiver knows it at once."""
        self._cache(item)

    def load_for(self, payment_hash: bytes, payment_secret: bytes | None, amp: bool) -> None:
        """Before the receiver sees an HTLC: give it the invoice the HTLC names, if we issued one."""
        self._load(payment_hash, lambda: self.store.invoice(payment_hash))
        if amp and payment_secret is not None:  # an AMP shard names its invoice by the payment secret
            found = next((i for i in self.receiver.invoices.values() if i.payment_secret == payment_secret), None)
            if found is not None:
                self._touch(found.payment_hash)
            else:
                record = self.store.invoice_by_secret(payment_secret)
                if record is not None:
                    self._load(record.payment_hash, lambda: record)

    def _load(self, payment_hash: bytes, fetch: Callable[[], InvoiceRecord | None]) -> None:
        if payment_hash in self.receiver.invoices:
            self._touch(payment_hash)
            return
        record = fetch()
        if record is not None and record.status == "unpaid":
            self.decoded += 1
            self._cache(receivable(record))

    def _touch(self, payment_hash: bytes) -> None:
        invoices = self.receiver.invoices
        invoices[payment_hash] = invoices.pop(payment_hash)  # most recently used last

    def _cache(self, item: Receivable) -> None:
        invoices = self.receiver.invoices
        invoices.pop(item.payment_hash, None)
        invoices[item.payment_hash] = item
        while len(invoices) > self.cache_size:
            del invoices[next(iter(invoices))]

    def maybe_prune(self, now: float, keep: Callable[[], Collection[bytes]]) -> None:
        """Prune if the last prune is ``PRUNE_INTERVAL_S`` old (``keep`` is asked only then)."""
        if self._last_prune is None or now - self._last_prune >= PRUNE_INTERVAL_S:
            self.prune(now, keep())

    def prune(self, now: float, keep: Collection[bytes]) -> int:
        """Delete unpaid invoices expired more than ``grace_s`` ago, except those in ``keep``."""
        self._last_prune = now
        with self.store.transaction():
            count = self.store.prune_invoices(int(now) - self.grace_s, keep)
        for payment_hash in [h for h, r in self.receiver.invoices.items() if r.expires_at < now - self.grace_s]:
            if payment_hash not in keep:
                del self.receiver.invoices[payment_hash]
        self.pruned += count
        return count
