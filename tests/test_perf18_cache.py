"""The allowance cache: least recently used out, bounded by bytes, and its size estimate honest."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from pathlib import Path

import pytest

from lightspeed.errors import UsageError
from lightspeed.micro.cache import LruCache, entry_bytes
from lightspeed.micro.hashchain import ChainWalker, anchor
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest, Token
from tests.support.ledger import Ledger


class _Lane:
    def __init__(self, server: AllowanceServer, tip: bytes, allowance_id: bytes) -> None:
        self.server, self.walker, self.allowance_id, self.index = server, ChainWalker.from_tip(tip, 100), allowance_id, 0

    async def spend(self) -> int:
        self.index += 1
        token = Token(self.allowance_id, 0, self.index, self.walker.link(self.index))
        return (await self.server.spend(token)).remaining_calls


async def _bought(server: AllowanceServer) -> _Lane:
    tip = os.urandom(32)
    terms = await server.create(AllowanceRequest(100, (anchor(tip, 100),)))
    return _Lane(server, tip, terms.allowance_id)


class _Paid(Ledger):
    """Every invoice paid: the cache, not Lightning, is under test."""

    async def is_paid(self, payment_hash: bytes) -> bool:
        return True


def _server(cache_bytes: int) -> AllowanceServer:
    ledger = _Paid()
    return AllowanceServer(MemoryAllowanceStore(), ledger, ledger.node_id, ServerPolicy(Price(1)),
                           cache_bytes=cache_bytes)


def test_the_budget_holds_exactly_n_allowances_and_the_n_plus_1st_evicts_the_least_recently_used() -> None:
    async def go() -> None:
        server = _server(3 * entry_bytes(1))
        a, b, c, d = [await _bought(server) for _ in range(4)]
        for lane in (a, b, c):
            await lane.spend()
        cache = server._cache
        assert len(cache) == 3 and cache.bytes == 3 * entry_bytes(1)  # N fit
        await a.spend()  # a is now the most recently used, b the least
        await d.spend()  # N + 1: one goes, and it is b (a FIFO would drop a, the first cached)
        assert len(cache) == 3 and cache.bytes <= 3 * entry_bytes(1)
        assert a.allowance_id in cache and b.allowance_id not in cache
        assert c.allowance_id in cache and d.allowance_id in cache
        assert await b.spend() == 98  # evicted: reloaded from the store, the spent link still counts

    asyncio.run(go())


def test_allowances_with_more_lanes_count_for_more_of_the_budget() -> None:
    cache: LruCache[str] = LruCache(max_bytes=entry_bytes(1) + entry_bytes(64))
    cache.put(b"one", "one lane", entry_bytes(1))
    cache.put(b"wide", "64 lanes", entry_bytes(64))
    assert len(cache) == 2  # exactly at the budget
    cache.put(b"two", "one lane", entry_bytes(1))  # one byte-budget past it: the oldest goes
    assert b"one" not in cache and len(cache) == 2
    cache.put(b"three", "one lane", entry_bytes(1))  # the wide one is now the least recently used
    assert b"wide" not in cache and cache.bytes == 2 * entry_bytes(1)


def test_one_entry_larger_than_the_budget_is_still_kept_alone() -> None:
    cache: LruCache[str] = LruCache(max_bytes=10)
    cache.put(b"a", "x", 100)
    assert cache.get(b"a") == "x"
    cache.put(b"b", "y", 100)
    assert cache.get(b"a") is None and cache.get(b"b") == "y" and cache.bytes == 100


def test_a_cache_without_room_is_refused_with_the_field_named() -> None:
    with pytest.raises(UsageError, match="cache_bytes"):
        LruCache(max_bytes=0)


@pytest.mark.parametrize("lanes", [1, 8, 64])
def test_the_size_estimate_is_close_to_what_the_cache_really_holds_and_never_far_under(tmp_path: Path, lanes: int) -> None:
    """Measured with tracemalloc on allowances loaded from SQLite (new objects, as in production)."""
    async def go() -> float:
        store = SqliteAllowanceStore(tmp_path / "s.sqlite", synchronous="OFF")
        ledger = _Paid()
        server = AllowanceServer(store, ledger, ledger.node_id, ServerPolicy(Price(1)))
        ids = []
        for _ in range(300):
            request = AllowanceRequest(10, tuple(anchor(os.urandom(32), 10) for _ in range(lanes)))
            ids.append((await server.create(request)).allowance_id)
        server._cache = LruCache()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for allowance_id in ids:
                await server._entry(allowance_id)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        await store.aclose()
        return used / len(ids)

    measured = asyncio.run(go())
    # Never much under (the budget would be overrun), never far over (memory left unused).
    assert 0.9 * measured <= entry_bytes(lanes) <= 1.25 * measured, (measured, entry_bytes(lanes))
