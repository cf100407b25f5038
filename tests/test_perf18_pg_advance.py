"""PostgreSQL's ``lightspeed_advance`` (issue 18): a batch writes each allowance row once, however
many of its advances moved, and refuses as before. Real PostgreSQL; a trigger counts the writes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import psycopg
import pytest

from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores.postgres import PostgresAllowanceStore
from tests.support.servers import postgres_server

COUNT_WRITES = """
CREATE TABLE IF NOT EXISTS allowance_writes (id bytea, spent bigint);
CREATE OR REPLACE FUNCTION count_allowance_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO allowance_writes VALUES (NEW.id, NEW.spent);
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER allowance_write AFTER UPDATE ON allowances
    FOR EACH ROW EXECUTE FUNCTION count_allowance_write();
"""


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with postgres_server() as server:
        yield server.dsn


def test_a_batch_writes_each_allowance_once_with_its_total_spent(dsn: str) -> None:
    async def main() -> None:
        store = PostgresAllowanceStore(dsn)
        try:
            a, b = os.urandom(16), os.urandom(16)
            for aid in (a, b):
                await store.create(aid, b"terms", 10_000, [bytes([n]) * 32 for n in range(4)],
                                   AllowanceState(Status.ACTIVE, 5))
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(COUNT_WRITES)
            outcomes = await asyncio.gather(
                store.advance(a, 0, 0, LaneState(1, b"a0")),
                store.advance(b, 0, 0, LaneState(2, b"b0")),
                store.advance(a, 1, 0, LaneState(1, b"a1")),
                store.advance(a, 1, 0, LaneState(1, b"a1 again")),  # the lane moved: STALE
                store.advance(b, 1, 0, LaneState(4, b"b1")),  # 2 + 4 > 5 paid: OVER_LIMIT
                store.advance(a, 2, 0, LaneState(2, b"a2")),
                store.advance(a, 9, 0, LaneState(1, b"no such lane")))
            assert outcomes == [Advance.OK, Advance.OK, Advance.OK, Advance.STALE,
                                Advance.OVER_LIMIT, Advance.OK, Advance.NOT_ACTIVE]
            assert store._advances.batches == 1
            with psycopg.connect(dsn, autocommit=True) as conn:
                writes = conn.execute("SELECT id, spent FROM allowance_writes").fetchall()
                conn.execute("DROP TRIGGER allowance_write ON allowances")
            assert sorted((bytes(i), s) for i, s in writes) == sorted([(a, 4), (b, 2)])
            loaded_a, loaded_b = await store.load(a), await store.load(b)
            assert loaded_a is not None and loaded_b is not None
            assert [lane.index for lane in loaded_a.lanes] == [1, 1, 2, 0]
            assert loaded_a.lanes[1].value == b"a1"
            assert [lane.index for lane in loaded_b.lanes] == [2, 0, 0, 0]
        finally:
            await store.aclose()

    asyncio.run(main())
