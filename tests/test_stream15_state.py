"""The shared stream state: the same contract on memory, real PostgreSQL and real Redis.

What failover rests on: a take-over fences the process that served before (its writes are
refused), the delivered count never goes down, the first statement recorded is the one every
process returns, and two processes racing to take one stream over: exactly one wins.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import psycopg
import pytest

from lightspeed.errors import UsageError
from lightspeed.micro.store import StoreError
from lightspeed.stream.state import MemoryStreamStore, StreamRecord, StreamStore, open_stream_store
from lightspeed.stream.state_postgres import PostgresStreamStore
from lightspeed.stream.state_redis import RedisStreamStore
from tests.support.servers import postgres_server, redis_server

Factory = Callable[[], StreamStore]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as server:
        yield server.dsn


@pytest.fixture(params=["memory", "redis", "postgres"])
def new_store(request: pytest.FixtureRequest) -> Factory:
    """Makes store objects sharing one backing store, as two seller processes do."""
    if request.param == "memory":
        shared = MemoryStreamStore()
        return lambda: shared
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"test:{os.urandom(8).hex()}:".encode()
        return lambda: RedisStreamStore(url, prefix)
    dsn = request.getfixturevalue("postgres_dsn")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS streams, stream_sellers")
    return lambda: PostgresStreamStore(dsn)


@asynccontextmanager
async def opened(factory: Factory) -> AsyncIterator[StreamStore]:
    store = factory()
    try:
        yield store
    finally:
        await store.aclose()


def record(stream_id: bytes = b"s" * 16) -> StreamRecord:
    return StreamRecord(stream_id, b"a" * 16, 0, 3, b"l" * 32, '{"unit":"Wh"}', b"k" * 32)


def test_a_take_over_fences_the_process_that_served_before(new_store: Factory) -> None:
    async def scenario() -> None:
        async with opened(new_store) as a, opened(new_store) as b:
            await a.create(record())
            assert await a.deliver(b"s" * 16, 0, 4)
            assert await b.take_over(b"s" * 16, 0)  # b resumes the stream: epoch 1
            assert not await a.deliver(b"s" * 16, 0, 5)  # a is fenced: it must deliver nothing more
            assert not await b.take_over(b"s" * 16, 0)  # a stale epoch takes nothing over
            assert await a.close(b"s" * 16, 0, "by a") == ""  # nor closes it
            assert await b.deliver(b"s" * 16, 1, 6)
            assert await b.deliver(b"s" * 16, 1, 2)  # never lowers the count
            loaded = await a.load(b"s" * 16)
            assert loaded is not None and (loaded.epoch, loaded.delivered_units, loaded.statement) == (1, 6, "")
            assert (loaded.start_index, loaded.start_link, loaded.resume_key) == (3, b"l" * 32, b"k" * 32)
            assert await b.close(b"s" * 16, 1, "by b") == "by b"
            assert await b.close(b"s" * 16, 1, "again") == "by b"  # the first statement stays
            assert await a.close(b"s" * 16, 0, "late") == "by b"
            assert not await b.take_over(b"s" * 16, 1) and not await b.deliver(b"s" * 16, 1, 7)
            assert await a.load(b"t" * 16) is None
            with pytest.raises(StoreError, match="already exists"):
                await b.create(record())

    asyncio.run(scenario())


def test_two_processes_racing_to_take_a_stream_over_one_wins(new_store: Factory) -> None:
    async def scenario() -> None:
        async with opened(new_store) as a, opened(new_store) as b:
            for n in range(20):
                sid = bytes([n]) * 16
                await a.create(record(sid))
                won = await asyncio.gather(a.take_over(sid, 0), b.take_over(sid, 0))
                assert sorted(won) == [False, True]

    asyncio.run(scenario())


def test_the_seller_processes_are_announced_in_order(new_store: Factory) -> None:
    async def scenario() -> None:
        async with opened(new_store) as a, opened(new_store) as b:
            await a.announce("ws://127.0.0.1:1/charge", b"\x02" * 33)
            await b.announce("ws://127.0.0.1:2/charge", b"\x03" * 33)
            await a.announce("ws://127.0.0.1:1/charge", b"\x02" * 33)  # a restart: same place
            assert await b.sellers() == [("ws://127.0.0.1:1/charge", b"\x02" * 33),
                                         ("ws://127.0.0.1:2/charge", b"\x03" * 33)]
            with pytest.raises(UsageError, match="url"):
                await a.announce("http://127.0.0.1:1/charge", b"\x02" * 33)

    asyncio.run(scenario())


def test_bad_records_are_refused_naming_the_field() -> None:
    async def scenario() -> None:
        store = MemoryStreamStore()
        with pytest.raises(UsageError, match="resume_key"):
            await store.create(StreamRecord(b"s" * 16, b"a" * 16, 0, 0, b"l" * 32, "", b"short"))
        with pytest.raises(UsageError, match="start_link"):
            await store.create(StreamRecord(b"s" * 16, b"a" * 16, 0, 0, b"l", "", b""))

    asyncio.run(scenario())
    assert isinstance(open_stream_store("memory"), MemoryStreamStore)
    with pytest.raises(UsageError, match="store"):
        open_stream_store("mysql://x")
