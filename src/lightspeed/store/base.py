"""The store interface the node writes through: narrow, so PostgreSQL can follow SQLite.

The rule it serves is LDK's: a channel state change is committed before any
message that depends on it is sent. The node groups every write caused by one
state change (the channel record, the remote commitment it signed, the payment
or invoice it settles, the onion it received) in one :meth:`Store.transaction`;
writes outside a transaction are refused, so a forgotten transaction is a bug
found at once rather than a half-written state found after a crash.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

PaymentStatus = Literal["pending", "succeeded", "failed"]
InvoiceStatus = Literal["unpaid", "paid"]


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


@dataclass(frozen=True)
class PaymentRecord:
    """An outgoing payment; ``channel_id``/``htlc_id`` name its HTLC while it is in flight."""

    payment_hash: bytes
    amount_msat: int
    status: PaymentStatus
    invoice: str = ""
    preimage: bytes | None = None
    channel_id: bytes | None = None
    htlc_id: int | None = None
    reason: str = ""


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

    # channels
    def allocate_key_index(self) -> int:
        """A channel key index never handed out before (inside a transaction: durable once committed)."""
        ...

    def put_channel(self, channel_id: bytes, peer_id: bytes, state: bytes, ready: bool) -> None: ...
    def add_remote_commitment(self, channel_id: bytes, ctn: int, record: bytes) -> None: ...
    def put_shutdown(self, channel_id: bytes, script_pubkey: bytes) -> None: ...
    def close_channel(self, channel_id: bytes, closing_txid: bytes) -> None: ...
    def channels(self) -> list[StoredChannel]: ...

    # peers we have channels with, and where to reach them
    def put_peer(self, node_id: bytes, host: str, port: int) -> None: ...
    def peers(self) -> dict[bytes, tuple[str, int]]: ...

    # invoices we issued, payments we made
    def put_invoice(self, invoice: InvoiceRecord) -> None: ...
    def invoice(self, payment_hash: bytes) -> InvoiceRecord | None: ...
    def invoices(self) -> list[InvoiceRecord]: ...
    def put_payment(self, payment: PaymentRecord) -> None: ...
    def payment(self, payment_hash: bytes) -> PaymentRecord | None: ...
    def payments(self) -> list[PaymentRecord]: ...

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
