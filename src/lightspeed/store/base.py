"""The store interface the node writes through: narrow, so PostgreSQL can follow SQLite.

The rule it serves is LDK's: a channel state change is committed before any
message that depends on it is sent. The node groups every write caused by one
state change (the channel record, the remote commitment it signed, the payment
or invoice it settles, the onion it received) in one :meth:`Store.transaction`;
writes outside a transaction are refused, so a forgotten transaction is a bug
found at once rather than a half-written state found after a crash.

A store that cannot commit (full disk, read-only file, I/O error) raises
:class:`StoreUnavailable` and stays failed: every later transaction is refused
at once, because the caller's memory may already be ahead of what is durable.
Listeners (:meth:`Store.add_failure_listener`) hear of it once, so the node can
stop before anything that depends on the lost commit leaves it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from lightspeed.errors import LightspeedError

PaymentStatus = Literal["pending", "succeeded", "failed"]
InvoiceStatus = Literal["unpaid", "paid"]
#: How a channel closed: ``mutual`` (closing_signed), ``local``/``remote`` (our/their latest commitment
#: went on chain), ``revoked`` (the peer broadcast a revoked commitment; we took it all), ``data_loss``
#: (we fell behind and wait for the peer's commitment).
CloseKind = Literal["mutual", "local", "remote", "revoked", "data_loss"]


class StoreUnavailable(LightspeedError):
    """The store cannot take writes (or answer reads): full disk, read-only file, I/O error.

    Raised by the failing operation and, once a write failed, by every later
    transaction of that store object (memory may be ahead of it: only a restart,
    which reloads what is durable, clears it).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"store unavailable: {reason}")


class StoreCorrupt(LightspeedError):
    """The file is not a store this node can read (not SQLite, damaged, another program's)."""


@dataclass(frozen=True)
class StoredChannel:
    """A channel as loaded at start: its state record and the remote commitments signed so far."""

    channel_id: bytes
    peer_id: bytes
    state: bytes
    remote_commitments: dict[int, bytes]
    ready: bool  # channel_ready went both ways before (payments may flow once reestablished)
    shutdown_script: bytes | None = None  # we sent shutdown (a mutual close is under way) to this script


@dataclass(frozen=True)
class CloseSummary:
    """What a closed channel was, kept when it closes so it can be listed without its state record."""

    kind: CloseKind
    funding_txid: bytes
    funding_output_index: int
    capacity_sat: int
    initiator: bool  # we funded it
    local_balance_msat: int  # our balance in our latest commitment when it closed (HTLCs aside)
    remote_balance_msat: int


@dataclass(frozen=True)
class ClosedChannel:
    """A closed channel. ``closing_txid`` is None while we wait for the peer to close (data loss);
    ``summary`` is None for a channel closed before summaries were kept."""

    channel_id: bytes
    peer_id: bytes
    closing_txid: bytes | None
    summary: CloseSummary | None


@dataclass(frozen=True)
class InvoiceRecord:
    payment_hash: bytes
    invoice: str  # the BOLT 11 string we handed out
    preimage: bytes
    payment_secret: bytes
    amount_msat: int | None
    status: InvoiceStatus = "unpaid"
    received_msat: int = 0
    paid_channel_id: bytes | None = None  # the HTLC we fulfilled for it (re-fulfilled, never another)
    paid_htlc_id: int | None = None
    expires_at: int | None = None  # unix time (decoded from ``invoice``; None: not known yet)


@dataclass(frozen=True)
class PaymentRecord:
    """An outgoing payment; ``channel_id``/``htlc_id`` name its latest HTLC.

    Every HTLC of it still in flight (all the parts of a multi-part payment) is a
    :meth:`Store.put_payment_part` row: it fails only once all of them failed.
    """

    payment_hash: bytes
    amount_msat: int
    status: PaymentStatus
    invoice: str = ""
    preimage: bytes | None = None
    channel_id: bytes | None = None
    htlc_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class AsyncPaymentRecord:
    """An outgoing payment made asynchronously (``pay --async``): its HTLC is held at ``lsp_id``.

    Kept beside the payment's :class:`PaymentRecord` so that when the preimage arrives after a
    restart the node still knows to emit ``AsyncPaymentSucceeded``; ``succeeded_at`` is set in the
    same transaction as that event, so it is emitted once.
    """

    payment_hash: bytes
    lsp_id: bytes
    amount_msat: int
    started_at: int
    succeeded_at: int | None = None


RefundStatus = Literal["open", "paying", "paid", "failed"]


@dataclass(frozen=True)
class RefundRecord:
    """A BOLT 12 refund (``lnr``) we created: we owe its amount to whoever sends us an invoice for it.

    ``path_id`` is the secret of the reply path in ``invreq_paths``: an invoice for the refund
    must come through it. ``status`` goes ``open`` -> ``paying`` (committed with the accepted
    invoice before the first HTLC leaves) -> ``paid`` or ``failed``; a refund is paid once.
    """

    payer_id: bytes  # invreq_payer_id: names the refund
    refund: str  # the lnr1... string
    path_id: bytes
    amount_msat: int
    expires_at: int | None
    status: RefundStatus = "open"
    payment_hash: bytes | None = None
    invoice: str = ""  # the lni1... we accepted (and paid, or are paying)


@dataclass(frozen=True)
class IncomingHtlcRecord:
    """What we decided for an incoming HTLC, kept until it leaves the channel.

    Forwarded: ``out_channel_id``/``out_htlc_id`` name the outgoing HTLC it waits on
    (committed with that HTLC's add, so a crash loses no link). Resolved: ``preimage``
    to fulfil it with, or ``failure``, the reason (already encrypted) to fail it with.
    """

    channel_id: bytes
    htlc_id: int
    payment_hash: bytes
    shared_secret: bytes
    out_channel_id: bytes | None = None
    out_htlc_id: int | None = None
    preimage: bytes | None = None
    failure: bytes | None = None


class Store(Protocol):
    """Durable node state. Reads work anywhere; writes only inside :meth:`transaction`."""

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic, durable unit: all of its writes or none survive a crash (nesting joins)."""
        ...

    def close(self) -> None: ...

    def add_failure_listener(self, listener: Callable[[StoreUnavailable], None]) -> None:
        """Call ``listener`` once, when the store first fails a write (before the error is raised)."""
        ...

    # channels
    def put_channel(self, channel_id: bytes, peer_id: bytes, state: bytes, ready: bool) -> None: ...
    def add_remote_commitment(self, channel_id: bytes, ctn: int, record: bytes) -> None: ...
    def put_shutdown(self, channel_id: bytes, script_pubkey: bytes) -> None: ...
    def close_channel(self, channel_id: bytes, closing_txid: bytes, summary: CloseSummary | None = None) -> None:
        """Mark the channel closed (``closing_txid`` all zero: closed, transaction not known yet)."""
        ...

    def channels(self) -> list[StoredChannel]: ...
    def closed_channels(self) -> list[ClosedChannel]: ...

    # peers we have channels with, and where to reach them
    def put_peer(self, node_id: bytes, host: str, port: int) -> None: ...
    def peers(self) -> dict[bytes, tuple[str, int]]: ...

    # invoices we issued, payments we made
    def put_invoice(self, invoice: InvoiceRecord) -> None: ...
    def invoice(self, payment_hash: bytes) -> InvoiceRecord | None: ...
    def invoices(self) -> list[InvoiceRecord]: ...

    def invoice_by_secret(self, payment_secret: bytes) -> InvoiceRecord | None:
        """The invoice with this payment secret (AMP shards carry the secret, not the invoice's hash)."""
        ...

    def paid_invoice_hashes(self) -> set[bytes]: ...

    def invoices_without_expiry(self) -> list[InvoiceRecord]:
        """Unpaid invoices whose ``expires_at`` is not recorded (written by an older version)."""
        ...

    def set_invoice_expiry(self, payment_hash: bytes, expires_at: int) -> None: ...

    def prune_invoices(self, expired_before: int, keep: Collection[bytes] = ()) -> int:
        """Delete unpaid invoices that expired before ``expired_before`` (not those in ``keep``);
        returns how many. Paid invoices are kept: they prove what was received."""
        ...

    def put_payment(self, payment: PaymentRecord) -> None: ...
    def payment(self, payment_hash: bytes) -> PaymentRecord | None: ...
    def payments(self) -> list[PaymentRecord]: ...
    def pending_payments(self) -> list[PaymentRecord]: ...
    # Every HTLC of an outgoing payment while it is in flight (a multi-part payment has several).
    def put_payment_part(self, payment_hash: bytes, channel_id: bytes, htlc_id: int) -> None: ...
    def delete_payment_part(self, channel_id: bytes, htlc_id: int) -> None: ...
    def payment_parts(self, payment_hash: bytes) -> list[tuple[bytes, int]]: ...

    # BOLT 12 refunds we created (kept for good: they prove what was refunded)
    def put_refund(self, refund: RefundRecord) -> None: ...
    def refund(self, payer_id: bytes) -> RefundRecord | None: ...
    def refund_by_path_id(self, path_id: bytes) -> RefundRecord | None: ...
    def refunds(self) -> list[RefundRecord]: ...

    # return paths that came with received payments, and the refund parts paid through each (the
    # refund's payment hash, committed before its first HTLC): kept for good, as paid invoices are
    def put_return_path(self, payment_hash: bytes, offer: str) -> None: ...
    def return_path(self, payment_hash: bytes) -> str | None: ...
    def put_return_refund(self, payment_hash: bytes, refund_hash: bytes, amount_msat: int) -> None: ...
    def return_refunds(self, payment_hash: bytes) -> list[tuple[bytes, int]]: ...

    # async payments we made (``pay --async``) and the LSPs we registered with, kept for good
    def put_async_payment(self, payment: AsyncPaymentRecord) -> None: ...
    def async_payment(self, payment_hash: bytes) -> AsyncPaymentRecord | None: ...

    def mark_async_payment_succeeded(self, payment_hash: bytes, now: int) -> bool:
        """True if the payment is async and was not marked before (it is marked now): exactly once."""
        ...

    def put_lsp_registration(self, lsp_id: bytes, webhook_url: str | None, registered_at: int) -> None: ...
    def lsp_registrations(self) -> list[tuple[bytes, str | None, int]]: ...

    # onions of incoming HTLCs, until the HTLC is settled
    def put_onion(self, channel_id: bytes, htlc_id: int, onion: bytes) -> None: ...
    def delete_onion(self, channel_id: bytes, htlc_id: int) -> None: ...
    def onion(self, channel_id: bytes, htlc_id: int) -> bytes | None: ...

    # incoming HTLCs forwarded or resolved, until they leave the channel
    def put_incoming_htlc(self, record: IncomingHtlcRecord) -> None: ...
    def delete_incoming_htlc(self, channel_id: bytes, htlc_id: int) -> None: ...
    def incoming_htlcs(self) -> list[IncomingHtlcRecord]: ...

    # channels being resolved on chain (force close, penalty): the resolver's record, kept for good
    def channel(self, channel_id: bytes) -> StoredChannel | None:
        """A channel closed or not (``channels()`` lists only open ones): what a resolution reloads."""
        ...

    def put_resolution(self, channel_id: bytes, record: bytes) -> None: ...
    def resolutions(self) -> dict[bytes, bytes]: ...

    # Transactions that must reach the chain (txid, serialized tx, what it is), kept until broadcast.
    def put_broadcast(self, txid: bytes, tx: bytes, what: str) -> None: ...
    def delete_broadcast(self, txid: bytes) -> None: ...
    def broadcasts(self) -> list[tuple[bytes, bytes, str]]: ...
