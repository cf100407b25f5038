"""The spent-state store: the one piece of pay-per-call state that must be shared and atomic.

Every API server instance that accepts tokens for an allowance must agree on how far each
lane's hash chain has been spent, or the same token could be served twice. The store keeps,
per allowance: the immutable terms (opaque bytes, parsed by :mod:`lightspeed.micro.terms`),
the mutable :class:`AllowanceState`, and one :class:`LaneState` per lane.

Two operations carry the safety argument and must be atomic in every implementation:

* :meth:`AllowanceStore.advance` moves one lane from a known index to a higher one, only if the
  allowance is active, the lane is still at that index, and the calls spent stay within the
  calls paid for. Two instances racing on the same lane: exactly one wins.
* :meth:`AllowanceStore.update_state` is a compare-and-set on ``(status, paid_calls, extra)``:
  activation, a paid batch and closing each happen exactly once.
* :meth:`AllowanceStore.set_refund` is a compare-and-set on a closed allowance's
  :class:`Refund` record: a refund is recorded in flight, with the payment hash of the one
  invoice being paid and the node paying it (:attr:`Refund.owner`), before any payment
  starts, so two requests or two instances can never pay it twice (see
  :mod:`lightspeed.micro.refunds`).
* :meth:`AllowanceStore.create` counts the unpaid (PENDING) allowances in the same atomic step
  as the insert when given ``max_unpaid``, and :meth:`AllowanceStore.delete_unpaid` removes one
  only while it is still PENDING: anyone can ask for allowances, so the unpaid ones are
  capped and forgotten after ``unpaid_until``.

Implementations: :mod:`lightspeed.micro.stores.sqlite` (default, one machine),
:mod:`~lightspeed.micro.stores.redis` and :mod:`~lightspeed.micro.stores.postgres` (many
instances sharing one view).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lightspeed.errors import LightspeedError, StorageUnavailable


class Status(enum.StrEnum):
    PENDING = "pending"  # created, its invoice not yet paid: no call is served
    ACTIVE = "active"  # paid: calls are served while spent < paid_calls
    CLOSED = "closed"  # closed by the client or expired: nothing more is served


@dataclass(frozen=True)
class AllowanceState:
    """The mutable part of an allowance.

    ``paid_calls`` is how many calls have been paid for (all of them for a prepaid
    allowance; a growing multiple of the batch size for a batched one). ``spent`` is the
    sum of the lanes' indices, maintained by ``advance`` only. ``extra`` is opaque JSON
    text for the server's bookkeeping (the pending batch invoice, the refund).
    """

    status: Status
    paid_calls: int
    spent: int = 0
    extra: str = ""


@dataclass(frozen=True)
class LaneState:
    """How far one lane's hash chain is spent: ``value`` is the link at ``index`` (0 = anchor)."""

    index: int
    value: bytes


@dataclass(frozen=True)
class StoredAllowance:
    allowance_id: bytes
    terms: bytes
    expires_at: int
    state: AllowanceState
    lanes: tuple[LaneState, ...]


class RefundStatus(enum.StrEnum):
    IN_FLIGHT = "in_flight"  # recorded before paying: its invoice is the only one ever paid
    PAID = "paid"  # the payer has the preimage (final)
    FAILED = "failed"  # definitively: no HTLC of it can settle any more; a new invoice may be paid


@dataclass(frozen=True)
class Refund:
    """One attempt at paying a closed allowance's refund (``attempt`` counts from 1).

    A new attempt (a new invoice) is only ever made after the previous one FAILED.

    ``owner``: the node paying it (its node id, hex), set when the record goes IN_FLIGHT or
    taken by compare-and-set from a record without one (written by a version before owners).
    Why: seller processes sharing one store may each have their own node, and only the paying
    node knows what it has sent (its durable per-payment totals). Any other node resuming the
    refund would see nothing sent and pay it again, so it leaves the record alone.
    """

    status: RefundStatus
    attempt: int
    amount_msat: int
    payment_hash: bytes
    invoice: str
    preimage: bytes = b""
    reason: str = ""
    owner: str = ""


class Advance(enum.Enum):
    """The outcome of :meth:`AllowanceStore.advance`."""

    OK = "ok"
    STALE = "stale"  # the lane is no longer at the expected index: reload and check again
    NOT_ACTIVE = "not_active"  # pending, closed, or unknown allowance
    OVER_LIMIT = "over_limit"  # the calls spent would exceed the calls paid for


class StoreError(LightspeedError):
    """The store refused an operation (for example an allowance id that already exists)."""


class AllowanceStoreUnavailable(StoreError, StorageUnavailable):
    """The store's file cannot be used (full disk, read-only file, I/O error): nothing was written.

    Names the file and the reason; the server answers 503 until the operator fixes it.
    """


class StoreFull(StoreError):
    """``create`` with ``max_unpaid``: that many unpaid allowances exist already."""


class AllowanceStore(Protocol):
    """A shared, atomic record of allowances and how far their lanes are spent."""

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState, *,
                     unpaid_until: int | None = None, max_unpaid: int | None = None) -> None:
        """Insert a new allowance whose lanes start at index 0 with the given anchors.

        A PENDING allowance is listed as unpaid until ``unpaid_until`` (default
        ``expires_at``), and leaves the list when ``update_state`` moves it out of PENDING.
        Raises :class:`StoreError` if ``allowance_id`` exists, :class:`StoreFull` (writing
        nothing) if ``max_unpaid`` is given and that many unpaid allowances exist.
        """
        ...

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        """The allowance, or ``None`` if unknown."""
        ...

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        """One lane's state, or ``None`` if the allowance or lane is unknown."""
        ...

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        """Atomically move ``lane`` from ``expected_index`` to ``new`` (``new.index`` greater).

        Succeeds only if the allowance is ACTIVE, the lane is at ``expected_index``, and
        ``spent + (new.index - expected_index) <= paid_calls``; then ``spent`` grows by
        that difference in the same atomic step.
        """
        ...

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        """Compare-and-set: if ``(status, paid_calls, extra)`` equal ``expected``'s, write
        ``new``'s ``status``, ``paid_calls`` and ``extra`` (``spent`` is neither compared nor
        written). True if written."""
        ...

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        """Ids of PENDING or ACTIVE allowances with ``expires_at < before`` (for the sweeper)."""
        ...

    async def unpaid_count(self) -> int:
        """How many allowances are PENDING (unpaid)."""
        ...

    async def unpaid_due(self, before: int, limit: int = 100) -> list[bytes]:
        """Ids of PENDING allowances with ``unpaid_until < before``, earliest first."""
        ...

    async def delete_unpaid(self, allowance_id: bytes) -> bool:
        """Atomically delete the allowance (terms, lanes) if it is still PENDING. True if deleted."""
        ...

    async def refund(self, allowance_id: bytes) -> Refund | None:
        """The allowance's refund record, or ``None`` (no refund started, or unknown allowance)."""
        ...

    async def set_refund(self, allowance_id: bytes, expected: Refund | None, new: Refund) -> bool:
        """Compare-and-set the refund record of a CLOSED allowance.

        Written only if the allowance is CLOSED and its current record matches ``expected``
        on ``(status, attempt, payment_hash, owner)`` (``None``: no record yet). True if
        written. Records written before owners existed read back with ``owner == ""``.
        """
        ...

    async def refunds_in_flight(self, limit: int = 100) -> list[bytes]:
        """Ids of allowances whose refund is IN_FLIGHT (to resolve after a restart)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
