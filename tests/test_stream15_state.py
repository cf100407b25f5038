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
from pathlib import Path

import psycopg
import pytest
import redis.asyncio

from lightspeed.cli.stream_example import stream_seller
from lightspeed.errors import UsageError
from lightspeed.micro.store import StoreError
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream.state import MemoryStreamStore, StreamRecord, StreamStore, open_stream_store
from lightspeed.stream.state_postgres import PostgresStreamStore
from lightspeed.stream.state_redis import RedisStreamStore
from tests.support.ledger import Ledger
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


# -- retention of closed streams (the shared stores would otherwise keep every stream ever sold) --


def test_redis_expires_a_closed_stream_set_in_the_step_that_records_its_statement(redis_url: str) -> None:
    async def scenario() -> None:
        prefix = f"test:{os.urandom(8).hex()}:".encode()
        store = RedisStreamStore(redis_url, prefix, closed_retention=0.4)
        raw = redis.asyncio.Redis.from_url(redis_url)
        try:
            open_id, closed_id, legacy_id, untouched_id = b"o" * 16, b"c" * 16, b"l" * 16, b"u" * 16
            for sid in (open_id, closed_id, legacy_id, untouched_id):
                await store.create(record(sid))
            assert await raw.pttl(prefix + b"s:" + open_id) == -1  # open: kept as long as it is served
            assert await store.close(closed_id, 0, "signed") == "signed"
            assert 0 < await raw.pttl(prefix + b"s:" + closed_id) <= 400
            # a stream closed by an earlier version (no expiry) gets one when a late close finds it
            await raw.hset(prefix + b"s:" + legacy_id, "statement", "old")
            assert await raw.pttl(prefix + b"s:" + legacy_id) == -1
            assert await store.close(legacy_id, 0, "late") == "old"
            assert 0 < await raw.pttl(prefix + b"s:" + legacy_id) <= 400
            # one closed by an earlier version and never touched again: the sweep's scan finds it
            await raw.hset(prefix + b"s:" + untouched_id, "statement", "old")
            for _ in range(500):  # a few keys a call (of the whole database): it goes on where it stopped
                assert await store.purge_closed(limit=2) == 0  # nothing deleted: Redis expires them
            assert 0 < await raw.pttl(prefix + b"s:" + untouched_id) <= 400
            loaded = await store.load(closed_id)
            assert loaded is not None and loaded.statement == "signed"  # a resume meanwhile gets it
            await asyncio.sleep(0.6)
            assert [await store.load(sid) for sid in (closed_id, legacy_id, untouched_id)] == [None] * 3
            assert await store.load(open_id) is not None
            assert await raw.pttl(prefix + b"s:" + open_id) == -1
        finally:
            await raw.aclose()
            await store.aclose()

    asyncio.run(scenario())


def test_postgres_purges_streams_closed_before_the_retention_a_bounded_number_at_a_time(postgres_dsn: str) -> None:
    async def scenario() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS streams, stream_sellers")
        store = PostgresStreamStore(postgres_dsn, closed_retention=0.5)
        try:
            closed = [bytes([n]) * 16 for n in range(5)]
            for sid in [*closed, b"o" * 16, b"r" * 16]:
                await store.create(record(sid))
            for sid in closed:
                assert await store.close(sid, 0, "signed") == "signed"
            assert await store.purge_closed() == 0  # closed just now: kept for a late resume
            await asyncio.sleep(0.7)
            assert await store.close(b"r" * 16, 0, "recent") == "recent"  # closed after the others
            assert await store.purge_closed(limit=3) == 3  # bounded: a sweep stays short
            assert await store.purge_closed(limit=3) == 2
            assert await store.purge_closed() == 0
            assert [await store.load(sid) for sid in closed] == [None] * 5
            kept = await store.load(b"o" * 16), await store.load(b"r" * 16)
            assert kept[0] is not None and kept[0].statement == ""  # open streams are never purged
            assert kept[1] is not None and kept[1].statement == "recent"
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_postgres_stamps_streams_closed_by_an_earlier_version_so_they_expire_too(postgres_dsn: str) -> None:
    async def scenario() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS streams, stream_sellers")
            conn.execute("""CREATE TABLE streams (id bytea PRIMARY KEY, allowance_id bytea NOT NULL,
                lane integer NOT NULL, start_index bigint NOT NULL, start_link bytea NOT NULL,
                tariff text NOT NULL, resume_key bytea NOT NULL, epoch bigint NOT NULL,
                delivered_units bigint NOT NULL, statement text NOT NULL)""")  # the table before closed_at
            conn.execute("INSERT INTO streams VALUES (%s, %s, 0, 0, %s, '', '', 0, 0, 'old'), "
                         "(%s, %s, 0, 0, %s, '', '', 0, 0, '')",
                         (b"c" * 16, b"a" * 16, b"l" * 32, b"o" * 16, b"a" * 16, b"l" * 32))
        store = PostgresStreamStore(postgres_dsn, closed_retention=0.3)
        try:
            assert await store.purge_closed() == 0  # stamped at start: its retention starts now
            await asyncio.sleep(0.5)
            assert await store.purge_closed() == 1
            assert await store.load(b"c" * 16) is None and await store.load(b"o" * 16) is not None
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_the_sellers_sweep_purges_the_shared_store_at_most_every_purge_every(postgres_dsn: str,
                                                                              tmp_path: Path) -> None:
    async def scenario() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS streams, stream_sellers")
        store = PostgresStreamStore(postgres_dsn, closed_retention=0.2)
        ledger, allowances = Ledger(), SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        seller = stream_seller(allowances, ledger, ledger.node_id, ledger.privkey, stream_store=store)
        now = [1000.0]
        seller.clock = lambda: now[0]
        try:
            for n in range(3):
                await store.create(record(bytes([n]) * 16))
                await store.close(bytes([n]) * 16, 0, "signed")
            await asyncio.sleep(0.4)
            await seller.sweep()  # the first sweep purges
            assert await store.load(b"\x00" * 16) is None
            await store.create(record(b"n" * 16))
            await store.close(b"n" * 16, 0, "signed")
            await asyncio.sleep(0.4)
            now[0] += seller.purge_every - 1
            await seller.sweep()  # too soon: no purge (a sweep runs at every stream opened)
            assert await store.load(b"n" * 16) is not None
            now[0] += 1
            await seller.sweep()
            assert await store.load(b"n" * 16) is None
        finally:
            await store.aclose()
            await allowances.aclose()

    asyncio.run(scenario())


def test_a_retention_of_nothing_is_refused_naming_the_field() -> None:
    for url, bad in (("redis://127.0.0.1:1", 0.0), ("postgresql://x@127.0.0.1/x", -1.0)):
        with pytest.raises(UsageError, match="closed_retention"):
            open_stream_store(url, closed_retention=bad)
