"""An in-process store: the allowance state of one server process, kept in dicts.

Atomic because every method runs to completion without awaiting: on one event loop no
other task can interleave. Nothing survives a restart and nothing is shared between
processes; use :mod:`.sqlite` (one machine) or :mod:`.redis` / :mod:`.postgres` for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lightspeed.micro.store import (
    Advance,
    AllowanceState,
    AllowanceStore,
    LaneState,
    Refund,
    RefundStatus,
    Status,
    StoredAllowance,
    StoreError,
    StoreFull,
)
from lightspeed.micro.stores._checks import (
    check_advance,
    check_create,
    check_create_limits,
    check_refund,
    check_state,
)


@dataclass
class _Row:
    """``state.spent`` stays 0: what is spent is the ``spent`` count, which an advance only adds
    to (a new frozen AllowanceState per call cost about 2 µs); :meth:`load` puts them together."""

    terms: bytes
    expires_at: int
    state: AllowanceState
    lanes: list[LaneState]
    unpaid_until: int
    refund: Refund | None = None
    spent: int = 0


class MemoryAllowanceStore:
    def __init__(self) -> None:
        self._rows: dict[bytes, _Row] = {}
        self._unpaid: set[bytes] = set()  # the PENDING ones, counted on every create

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState, *,
                     unpaid_until: int | None = None, max_unpaid: int | None = None) -> None:
        check_create(allowance_id, expires_at, anchors, state)
        check_create_limits(unpaid_until, max_unpaid)
        if allowance_id in self._rows:
            raise StoreError(f"allowance_id: {allowance_id.hex()} already exists")
        if state.status is Status.PENDING:
            if max_unpaid is not None and len(self._unpaid) >= max_unpaid:
                raise StoreFull(f"{max_unpaid} unpaid allowances exist already")
            self._unpaid.add(allowance_id)
        self._rows[allowance_id] = _Row(terms, expires_at, replace(state, spent=0),
                                        [LaneState(0, a) for a in anchors],
                                        expires_at if unpaid_until is None else unpaid_until)

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        row = self._rows.get(allowance_id)
        if row is None:
            return None
        s = row.state
        return StoredAllowance(allowance_id, row.terms, row.expires_at,
                               AllowanceState(s.status, s.paid_calls, row.spent, s.extra), tuple(row.lanes))

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        row = self._rows.get(allowance_id)
        return row.lanes[lane] if row is not None and 0 <= lane < len(row.lanes) else None

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        check_advance(lane, expected_index, new)
        row = self._rows.get(allowance_id)
        if row is None or row.state.status is not Status.ACTIVE or not 0 <= lane < len(row.lanes):
            return Advance.NOT_ACTIVE
        if row.lanes[lane].index != expected_index:
            return Advance.STALE
        delta = new.index - expected_index
        if row.spent + delta > row.state.paid_calls:
            return Advance.OVER_LIMIT
        row.lanes[lane] = new
        row.spent += delta
        return Advance.OK

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        check_state(new)
        row = self._rows.get(allowance_id)
        if row is None:
            return False
        cur = row.state
        if (cur.status, cur.paid_calls, cur.extra) != (expected.status, expected.paid_calls, expected.extra):
            return False
        row.state = AllowanceState(new.status, new.paid_calls, 0, new.extra)
        if new.status is not Status.PENDING:
            self._unpaid.discard(allowance_id)
        return True

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        return [k for k, r in self._rows.items()
                if r.expires_at < before and r.state.status is not Status.CLOSED][:limit]

    async def unpaid_count(self) -> int:
        return len(self._unpaid)

    async def unpaid_due(self, before: int, limit: int = 100) -> list[bytes]:
        due = sorted((self._rows[k].unpaid_until, k) for k in self._unpaid
                     if self._rows[k].unpaid_until < before)
        return [k for _, k in due[:limit]]

    async def delete_unpaid(self, allowance_id: bytes) -> bool:
        row = self._rows.get(allowance_id)
        if row is None or row.state.status is not Status.PENDING:
            return False
        del self._rows[allowance_id]
        self._unpaid.discard(allowance_id)
        return True

    async def refund(self, allowance_id: bytes) -> Refund | None:
        row = self._rows.get(allowance_id)
        return None if row is None else row.refund

    async def set_refund(self, allowance_id: bytes, expected: Refund | None, new: Refund) -> bool:
        check_refund(new)
        row = self._rows.get(allowance_id)
        if row is None or row.state.status is not Status.CLOSED or not _same(row.refund, expected):
            return False
        row.refund = new
        return True

    async def refunds_in_flight(self, limit: int = 100) -> list[bytes]:
        return [k for k, r in self._rows.items()
                if r.refund is not None and r.refund.status is RefundStatus.IN_FLIGHT][:limit]

    async def aclose(self) -> None:
        self._rows.clear()
        self._unpaid.clear()


def _same(current: Refund | None, expected: Refund | None) -> bool:
    """The refund compare-and-set's comparison, on ``(status, attempt, payment_hash, owner)``."""
    if current is None or expected is None:
        return current is expected
    return ((current.status, current.attempt, current.payment_hash, current.owner)
            == (expected.status, expected.attempt, expected.payment_hash, expected.owner))


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: MemoryAllowanceStore) -> AllowanceStore:
        return store
