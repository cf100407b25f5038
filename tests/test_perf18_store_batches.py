"""Batched advances on the shared stores (issue 18): the advances made in one event-loop turn
go to Redis as one script run and to PostgreSQL as one transaction, each still checked on
its own, in order; a failure fails only what it must. Real redis-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence

import psycopg
import pytest
import redis

from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores._batch import TurnBatcher
from lightspeed.micro.stores.postgres import PostgresAllowanceStore
from lightspeed.micro.stores.redis import RedisAllowanceStore
from tests.support.servers import postgres_server, redis_server

Store = RedisAllowanceStore | PostgresAllowanceStore


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as server:
        yield server.dsn


@pytest.fixture(params=["redis", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_store(kind: str, request: pytest.FixtureRequest) -> Store:
    if kind == "redis":
        return RedisAllowanceStore(request.getfixturevalue("redis_url"),
                                   prefix=f"t:{os.urandom(6).hex()}:".encode())
    return PostgresAllowanceStore(request.getfixturevalue("postgres_dsn"))


def batches(store: Store) -> int:
    return store._advances.batches


async def allowance(store: Store, paid: int = 10, lanes: int = 2) -> bytes:
    allowance_id = os.urandom(16)
    await store.create(allowance_id, b"terms", 10_000, [bytes([n]) * 32 for n in range(lanes)],
                       AllowanceState(Status.ACTIVE, paid))
    return allowance_id


def test_racing_spends_of_one_lane_in_one_batch_exactly_one_wins(
        kind: str, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        store = make_store(kind, request)
        try:
            aid = await allowance(store)
            before = batches(store)
            outcomes = await asyncio.gather(*(
                store.advance(aid, 0, 0, LaneState(1, bytes([n]) * 32)) for n in range(6)))
            assert batches(store) == before + 1  # all six went together
            assert [o.value for o in outcomes] == ["ok"] + ["stale"] * 5  # the first one made
            loaded = await store.load(aid)
            assert loaded is not None and loaded.state.spent == 1
            assert loaded.lanes[0] == LaneState(1, bytes([0]) * 32)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_a_batch_runs_in_order_and_counts_spent_across_its_advances(
        kind: str, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        store = make_store(kind, request)
        try:
            a = await allowance(store, paid=3)
            b = await allowance(store, paid=10)
            before = batches(store)
            outcomes = await asyncio.gather(
                store.advance(a, 0, 0, LaneState(1, b"a1")),   # ok
                store.advance(b, 1, 1, LaneState(2, b"b2")),   # stale: its move comes after
                store.advance(b, 1, 0, LaneState(1, b"b1")),   # ok
                store.advance(a, 0, 1, LaneState(2, b"a2")),   # ok: sees the first
                store.advance(a, 1, 0, LaneState(2, b"a3")),   # over the 3 paid calls
                store.advance(a, 1, 0, LaneState(1, b"a4")),   # ok: the third call
                store.advance(os.urandom(16), 0, 0, LaneState(1, b"x")))  # unknown
            assert batches(store) == before + 1
            assert [o.value for o in outcomes] == [
                "ok", "stale", "ok", "ok", "over_limit", "ok", "not_active"]
            loaded_a, loaded_b = await store.load(a), await store.load(b)
            assert loaded_a is not None and loaded_b is not None
            assert loaded_a.state.spent == 3 and loaded_b.state.spent == 1
            assert loaded_a.lanes == (LaneState(2, b"a2"), LaneState(1, b"a4"))
            assert loaded_b.lanes[1] == LaneState(1, b"b1")
        finally:
            await store.aclose()

    asyncio.run(main())


def test_redis_an_unreadable_key_fails_its_own_advance_only(
        redis_url: str) -> None:
    """Redis does not roll a script back: the batch must not fail the advances it applied."""
    async def main() -> None:
        prefix = f"t:{os.urandom(6).hex()}:".encode()
        store = RedisAllowanceStore(redis_url, prefix=prefix)
        try:
            a, b = await allowance(store), await allowance(store)
            broken = os.urandom(16)
            with redis.Redis.from_url(redis_url) as client:
                client.set(prefix + b"a:" + broken, b"not a hash")
            outcomes = await asyncio.gather(
                store.advance(a, 0, 0, LaneState(1, b"a1")),
                store.advance(broken, 0, 0, LaneState(1, b"x")),
                store.advance(b, 0, 0, LaneState(1, b"b1")), return_exceptions=True)
            assert outcomes[0] is Advance.OK and outcomes[2] is Advance.OK
            assert isinstance(outcomes[1], redis.ResponseError)
            assert "WRONGTYPE" in str(outcomes[1])
            for aid in (a, b):
                loaded = await store.load(aid)
                assert loaded is not None and loaded.state.spent == 1
        finally:
            await store.aclose()

    asyncio.run(main())


def test_postgres_a_failure_mid_batch_fails_the_batch_and_commits_none_of_it(
        postgres_dsn: str) -> None:
    """One transaction: an error in any advance rolls all back, so none is acknowledged and
    none is spent; the next batch goes through."""
    async def main() -> None:
        store = PostgresAllowanceStore(postgres_dsn)
        try:
            a, b = await allowance(store), await allowance(store)
            with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                conn.execute("""CREATE OR REPLACE FUNCTION perf18_boom() RETURNS trigger AS $$
                    BEGIN IF NEW.value = '\\x626f6f6d' THEN RAISE EXCEPTION 'boom'; END IF;
                    RETURN NEW; END $$ LANGUAGE plpgsql""")
                conn.execute("DROP TRIGGER IF EXISTS perf18_boom ON lanes")
                conn.execute("CREATE TRIGGER perf18_boom BEFORE UPDATE ON lanes "
                             "FOR EACH ROW EXECUTE FUNCTION perf18_boom()")
            try:
                outcomes = await asyncio.gather(
                    store.advance(a, 0, 0, LaneState(1, b"a1")),
                    store.advance(b, 0, 0, LaneState(1, b"boom")),
                    store.advance(a, 1, 0, LaneState(1, b"a2")), return_exceptions=True)
                assert all(isinstance(o, psycopg.errors.RaiseException) for o in outcomes)
                for aid in (a, b):
                    loaded = await store.load(aid)
                    assert loaded is not None and loaded.state.spent == 0
                    assert [lane.index for lane in loaded.lanes] == [0, 0]
                outcomes = await asyncio.gather(
                    store.advance(a, 0, 0, LaneState(1, b"a1")),
                    store.advance(b, 0, 0, LaneState(1, b"b1")))
                assert outcomes == [Advance.OK, Advance.OK]
            finally:
                with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                    conn.execute("DROP TRIGGER IF EXISTS perf18_boom ON lanes")
        finally:
            await store.aclose()

    asyncio.run(main())


def test_a_lone_advance_runs_at_once_and_later_ones_form_new_batches(
        kind: str, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        store = make_store(kind, request)
        try:
            aid = await allowance(store)
            before = batches(store)
            for n in range(3):
                assert await store.advance(aid, 0, n, LaneState(n + 1, b"v")) is Advance.OK
            assert batches(store) == before + 3
        finally:
            await store.aclose()

    asyncio.run(main())


def test_the_batcher_keeps_order_splits_at_its_cap_and_a_failed_batch_fails_only_itself() -> None:
    seen: list[list[int]] = []

    async def run_batch(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0)
        if 3 in items:
            raise RuntimeError("batch with 3 failed")
        return [item * 10 for item in items]

    async def main() -> None:
        batcher: TurnBatcher[int, int] = TurnBatcher(run_batch, max_batch=2)
        outcomes = await asyncio.gather(*(batcher.submit(n) for n in range(1, 6)),
                                        return_exceptions=True)
        assert seen == [[1, 2], [3, 4], [5]]
        assert outcomes[:2] == [10, 20] and outcomes[4] == 50
        assert all(isinstance(o, RuntimeError) for o in outcomes[2:4])
        assert await batcher.submit(6) == 60  # the drain task ended and starts again
        assert batcher.batches == 4

    asyncio.run(main())
