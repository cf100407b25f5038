"""The SQLite allowance store reads an allowance's status and paid calls, on every paid call,
through the small covering index ``allowances_cap`` instead of the allowance's row (terms and
``extra`` make it over 1 KB, which made the lookup cost about as much again as the rest of the
statement). The plan must use the index, a file made before the index must get it when opened,
and the move must still refuse what it refused before."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores.sqlite import _MOVE_LANE, SqliteAllowanceStore


def _plan(path: Path) -> str:
    with sqlite3.connect(path) as db:
        rows = db.execute("EXPLAIN QUERY PLAN " + _MOVE_LANE, (1, b"", b"", 0, 0, 1)).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


def test_the_lane_move_reads_the_allowance_through_the_covering_index(tmp_path: Path) -> None:
    store = SqliteAllowanceStore(tmp_path / "a.sqlite")
    asyncio.run(store.aclose())
    assert "COVERING INDEX allowances_cap" in _plan(tmp_path / "a.sqlite")


def test_a_file_made_without_the_index_gets_it_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    asyncio.run(SqliteAllowanceStore(path).aclose())
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX allowances_cap")
    with sqlite3.connect(path) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'allowances_cap'").fetchall()
    asyncio.run(SqliteAllowanceStore(path).aclose())
    assert "COVERING INDEX allowances_cap" in _plan(path)


def test_the_move_still_refuses_past_the_paid_calls_and_on_a_closed_allowance(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteAllowanceStore(tmp_path / "a.sqlite", synchronous="NORMAL")
        try:
            allowance_id = os.urandom(16)
            pending = AllowanceState(Status.PENDING, 0, 0, "{" + '"batch_invoice": "' + "q" * 900 + '"}')
            await store.create(allowance_id, os.urandom(330), 2**40, [os.urandom(32)], pending)
            active = AllowanceState(Status.ACTIVE, 2, 0, pending.extra)
            assert await store.update_state(allowance_id, pending, active)
            assert await store.advance(allowance_id, 0, 0, LaneState(1, os.urandom(32))) is Advance.OK
            assert await store.advance(allowance_id, 0, 1, LaneState(2, os.urandom(32))) is Advance.OK
            # a third call is not paid: the index's paid_calls refuses it
            assert await store.advance(allowance_id, 0, 2, LaneState(3, os.urandom(32))) is Advance.OVER_LIMIT
            # paid more (the index follows the row's update), then closed (and the index follows)
            more = AllowanceState(Status.ACTIVE, 3, 0, active.extra)
            assert await store.update_state(allowance_id, active, more)
            assert await store.advance(allowance_id, 0, 2, LaneState(3, os.urandom(32))) is Advance.OK
            closed = AllowanceState(Status.CLOSED, 4, 0, more.extra)
            assert await store.update_state(allowance_id, more, closed)
            assert await store.advance(allowance_id, 0, 3, LaneState(4, os.urandom(32))) is Advance.NOT_ACTIVE
        finally:
            await store.aclose()

    asyncio.run(scenario())
