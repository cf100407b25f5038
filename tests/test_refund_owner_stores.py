"""The refund record's owner (the node paying it) in all four allowance stores, real servers.

Seller processes sharing a store may each have their own node; a refund in flight is resumed
only by the node named in its record (:mod:`lightspeed.micro.auto_refund`). So the owner is part
of the record's compare-and-set, and records written before owners existed (no owner column or
field) read back unowned and are taken by exactly one node.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import redis

from lightspeed.errors import UsageError
from lightspeed.micro.store import AllowanceStore, Refund, RefundStatus
from lightspeed.micro.stores.postgres import PostgresAllowanceStore
from lightspeed.micro.stores.redis import RedisAllowanceStore
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from tests.test_micro_stores import (
    CLOSED,
    Factory,
    every_store,
    new_allowance,
    opened,
    postgres_dsn,
    redis_url,
)

__all__ = ["every_store", "postgres_dsn", "redis_url"]  # fixtures shared with the store suite

NODE_C, NODE_D = "02" + "c" * 64, "03" + "d" * 64
HASH = b"h" * 32


def _in_flight(owner: str = "") -> Refund:
    return Refund(RefundStatus.IN_FLIGHT, 1, 4_000, HASH, "return_path", owner=owner)


def test_the_owner_is_written_read_and_compared(every_store: Factory) -> None:
    async def main() -> None:
        async with opened(every_store) as store:
            aid = await new_allowance(store, CLOSED)
            mine = _in_flight(NODE_C)
            assert await store.set_refund(aid, None, mine)
            assert await store.refund(aid) == mine and await store.refunds_in_flight() == [aid]
            paid = replace(mine, status=RefundStatus.PAID, preimage=b"p" * 32)
            for wrong in (_in_flight(), _in_flight(NODE_D)):  # unowned, or another node's
                assert not await store.set_refund(aid, wrong, paid)
            assert await store.refund(aid) == mine
            assert await store.set_refund(aid, mine, paid)
            assert await store.refund(aid) == paid and await store.refunds_in_flight() == []
            for bad in ("c" * 66 + "0", "02" + "C" * 64, "node d"):
                with pytest.raises(UsageError, match="owner"):
                    await store.set_refund(aid, paid, replace(paid, owner=bad))
            assert await store.refund(aid) == paid

    asyncio.run(main())


def test_two_nodes_taking_an_unowned_record_at_once_exactly_one_wins(every_store: Factory) -> None:
    async def main() -> None:
        async with opened(every_store) as first, opened(every_store) as second:
            for _ in range(10):
                aid = await new_allowance(first, CLOSED)
                old = _in_flight()
                assert await first.set_refund(aid, None, old)
                takes = [replace(old, owner=NODE_C), replace(old, owner=NODE_D)]
                won = await asyncio.gather(first.set_refund(aid, old, takes[0]),
                                           second.set_refund(aid, old, takes[1]))
                assert sorted(won) == [False, True]
                assert await second.refund(aid) == takes[won.index(True)]
                assert not await first.set_refund(aid, old, takes[won.index(False)])  # never taken twice

    asyncio.run(main())


async def _old_record(kind: str, store: AllowanceStore, allowance_id: bytes, tmp_path: Path,
                      request: pytest.FixtureRequest, prefix: bytes) -> AllowanceStore:
    """Rewrite ``allowance_id``'s refund as a version before owners stored it (no owner column or
    field) and return a newly opened store object (a process started after the upgrade)."""
    old = _in_flight()
    fields = (allowance_id, old.status.value, old.attempt, old.amount_msat, old.payment_hash,
              old.invoice, old.preimage, old.reason)
    if kind == "sqlite":
        await store.aclose()
        with sqlite3.connect(tmp_path / "owner.sqlite") as db:
            db.execute("ALTER TABLE refunds DROP COLUMN owner")
            db.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?, ?)", fields)
        return SqliteAllowanceStore(tmp_path / "owner.sqlite")
    if kind == "postgres":
        await store.aclose()
        dsn = request.getfixturevalue("postgres_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE refunds DROP COLUMN owner")
            conn.execute("INSERT INTO refunds VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", fields)
        return PostgresAllowanceStore(dsn)
    url = request.getfixturevalue("redis_url")
    await store.aclose()
    with redis.Redis.from_url(url) as client:
        client.hset(prefix + b"r:" + allowance_id, mapping=dict(zip(
            ("status", "attempt", "amount_msat", "payment_hash", "invoice", "preimage", "reason"), fields[1:], strict=True)))
        client.zadd(prefix + b"refunding", {allowance_id: 0})
    return RedisAllowanceStore(url, prefix=prefix)


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_a_record_written_before_owners_reads_unowned_and_is_taken_once(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    prefix = f"test:{os.urandom(8).hex()}:".encode()

    async def main() -> None:
        if kind == "sqlite":
            store: AllowanceStore = SqliteAllowanceStore(tmp_path / "owner.sqlite")
        elif kind == "redis":
            store = RedisAllowanceStore(request.getfixturevalue("redis_url"), prefix=prefix)
        else:
            with psycopg.connect(request.getfixturevalue("postgres_dsn"), autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS refunds, unpaid, lanes, allowances")
            store = PostgresAllowanceStore(request.getfixturevalue("postgres_dsn"))
        aid = await new_allowance(store, CLOSED)
        store = await _old_record(kind, store, aid, tmp_path, request, prefix)
        try:
            old = await store.refund(aid)
            assert old == _in_flight() and old.owner == ""
            assert await store.refunds_in_flight() == [aid]
            assert not await store.set_refund(aid, _in_flight(NODE_D), replace(old, owner=NODE_C))
            assert await store.set_refund(aid, old, replace(old, owner=NODE_C))
            assert not await store.set_refund(aid, old, replace(old, owner=NODE_D))
            assert await store.refund(aid) == _in_flight(NODE_C)
        finally:
            await store.aclose()

    asyncio.run(main())
