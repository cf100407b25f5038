"""What the node tells the application (``node.events``): payments received, sent, failed, held.

Defined apart from node.py so the node's parts can emit them without importing node.py;
node.py re-exports them (``from lightspeed.node.node import PaymentReceived`` keeps working).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.node.broadcast import BroadcastRejected
from lightspeed.node.forwarding import ForwardSettled


@dataclass(frozen=True)
class PaymentReceived:
    payment_hash: bytes
    amount_msat: int


@dataclass(frozen=True)
class PaymentSent:
    payment_hash: bytes
    preimage: bytes
    amount_msat: int


@dataclass(frozen=True)
class PaymentFailed:
    payment_hash: bytes
    reason: str


@dataclass(frozen=True)
class HtlcHeld:
    """A hold invoice's payment arrived in full: ``settle_hold`` or ``cancel_hold`` it. With
    ``client_id``: as an LSP we hold a client's HTLC for an async payment (node.async_runtime)."""

    payment_hash: bytes
    amount_msat: int
    client_id: bytes | None = None


@dataclass(frozen=True)
class HtlcReleased:
    """As an LSP, a held HTLC was released by a valid ``payment_unblock``: it is forwarded now."""

    payment_hash: bytes
    amount_msat: int
    client_id: bytes


@dataclass(frozen=True)
class AsyncPaymentSucceeded:
    """Our async payment (``pay --async``) was settled: ``preimage`` is its proof."""

    payment_hash: bytes
    preimage: bytes


NodeEvent = (PaymentReceived | PaymentSent | PaymentFailed | HtlcHeld | HtlcReleased | AsyncPaymentSucceeded
             | BroadcastRejected | ForwardSettled)


HtlcKey = tuple[bytes, int]  # (channel id, HTLC id)
