"""An in-process store: the allowance state of one server process, kept in dicts.

Atomic because every method runs to completion without awaiting: on one event loop no
other task can interleave. Nothing survives a restart and nothing is shared between
processes; use :mod:`.sqlite` (one machine) or :mod:`.redis` / :mod:`.postgres` for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lightspeed.micro.store import (
    Advance,
    AllowanceState,
    LaneState,
    Status,
    StoredAllowance,
    StoreError,
)


@dataclass
class _Row:
    terms: bytes
    expires_at: int
    state: AllowanceState
    lanes: list[LaneState]


class MemoryAllowanceStore:
    def __init__(self) -> None:
        self._rows: dict[bytes, _Row] = {}

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState) -> None:
        if allowance_id in self._rows:
            raise StoreError(f"allowance {allowance_id.hex()} exists")
        self._rows[allowance_id] = _Row(terms, expires_at, replace(state, spent=0),
                                        [LaneState(0, a) for a in anchors])

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        row = self._rows.get(allowance_id)
        if row is None:
            return None
        return StoredAllowance(allowance_id, row.terms, row.expires_at, row.state, tuple(row.lanes))

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        row = self._rows.get(allowance_id)
        return row.lanes[lane] if row is not None and 0 <= lane < len(row.lanes) else None

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        row = self._rows.get(allowance_id)
        if row is None or row.state.status is not Status.ACTIVE or not 0 <= lane < len(row.lanes):
            return Advance.NOT_ACTIVE
        if row.lanes[lane].index != expected_index:
            return Advance.STALE
        delta = new.index - expected_index
        if row.state.spent + delta > row.state.paid_calls:
            return Advance.OVER_LIMIT
        row.lanes[lane] = new
        state = row.state
        row.state = AllowanceState(state.status, state.paid_calls, state.spent + delta, state.extra)
        return Advance.OK

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        row = self._rows.get(allowance_id)
        if row is None:
            return False
        cur = row.state
        if (cur.status, cur.paid_calls, cur.extra) != (expected.status, expected.paid_calls, expected.extra):
            return False
        row.state = AllowanceState(new.status, new.paid_calls, cur.spent, new.extra)
        return True

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        return [k for k, r in self._rows.items()
                if r.expires_at < before and r.state.status is not Status.CLOSED][:limit]

    async def aclose(self) -> None:
        self._rows.clear()
