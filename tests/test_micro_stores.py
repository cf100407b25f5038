"""One conformance suite for the spent-state stores (SQLite, Redis, PostgreSQL), real servers.

Every test runs against all three stores: Redis and PostgreSQL are started on loopback by
tests/support/servers.py (once per test worker). The attack the pay-per-call design must
survive is a double spend raced from two server instances at once: two store objects with
their own connections advance the same lane from the same index, and exactly one may win.
SQLite is raced from two threads and from two processes as well, and checked against a
model by a hypothesis state machine.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.server import AllowanceServer, CallRefused, ServerPolicy
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
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.stores.postgres import PostgresAllowanceStore
from lightspeed.micro.stores.redis import RedisAllowanceStore
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import AllowanceTerms, Price
from lightspeed.micro.token import AllowanceRequest, Token
from tests.support import servers
from tests.support.ledger import Ledger
from tests.support.servers import postgres_server, redis_server

Factory = Callable[[], AllowanceStore]

ACTIVE_10 = AllowanceState(Status.ACTIVE, 10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as server:
        yield server.dsn


def test_a_test_server_that_loses_the_race_for_its_port_takes_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Parallel workers pick free ports independently; a port taken meanwhile is retried."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], servers.free_port()])
        monkeypatch.setattr(servers, "free_port", lambda: next(ports))
        with servers.redis_server() as server, redis.Redis.from_url(server.url) as client:
            assert server.port != taken.getsockname()[1]
            assert client.ping()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes store objects that share one backing store (as separate server instances do)."""
    return store_factory(request.param, request, tmp_path)


def store_factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if kind == "memory":  # one object stands for every instance of one process
        shared = MemoryAllowanceStore()
        return lambda: shared
    if kind == "sqlite":
        path = tmp_path / "spent.db"
        return lambda: SqliteAllowanceStore(path)
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"test:{os.urandom(8).hex()}:".encode()
        return lambda: RedisAllowanceStore(url, prefix=prefix)
    dsn = request.getfixturevalue("postgres_dsn")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS refunds, unpaid, lanes, allowances")
    return lambda: PostgresAllowanceStore(dsn)


@asynccontextmanager
async def opened(factory: Factory) -> AsyncIterator[AllowanceStore]:
    store = factory()
    try:
        yield store
    finally:
        await store.aclose()


def run(factory: Factory, scenario: Callable[[AllowanceStore], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opened(factory) as store:
            await scenario(store)

    asyncio.run(main())


def link(lane: int, index: int) -> bytes:
    """A stand-in chain link: the stores treat lane values as opaque bytes."""
    return bytes([lane]) * 16 + index.to_bytes(16, "big")


async def new_allowance(store: AllowanceStore, state: AllowanceState = ACTIVE_10,
                        lanes: int = 2, expires_at: int = 1_000) -> bytes:
    allowance_id = os.urandom(16)
    anchors = [link(n, 0) for n in range(lanes)]
    await store.create(allowance_id, b"terms " + allowance_id, expires_at, anchors, state)
    return allowance_id


# ---------------------------------------------------------------------------- basics


def test_create_load_round_trip_and_reopen(new_store: Factory) -> None:
    allowance_id = os.urandom(16)
    anchors = [link(0, 0), link(1, 0), link(2, 0)]
    state = AllowanceState(Status.PENDING, 1_000, extra='{"invoice": "lnbcrt1..."}')
    expected = StoredAllowance(allowance_id, b"\x00terms\xff", 1_700_000_000, state,
                               tuple(LaneState(0, a) for a in anchors))

    async def write(store: AllowanceStore) -> None:
        await store.create(allowance_id, b"\x00terms\xff", 1_700_000_000, anchors, state)
        assert await store.load(allowance_id) == expected
        assert await store.lane(allowance_id, 2) == LaneState(0, anchors[2])
        assert await store.lane(allowance_id, 3) is None
        assert await store.load(b"unknown") is None
        assert await store.lane(b"unknown", 0) is None

    async def read_again(store: AllowanceStore) -> None:  # a restarted server instance
        assert await store.load(allowance_id) == expected

    run(new_store, write)
    run(new_store, read_again)


def test_duplicate_id_is_refused_and_changes_nothing(new_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        allowance_id = await new_allowance(store, lanes=2)
        before = await store.load(allowance_id)
        with pytest.raises(StoreError, match="already exists"):
            await store.create(allowance_id, b"other", 5, [b"x"], AllowanceState(Status.ACTIVE, 9))
        assert await store.load(allowance_id) == before

    run(new_store, scenario)


def test_misuse_is_a_usage_error(new_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        allowance_id = await new_allowance(store)
        with pytest.raises(UsageError, match=r"new\.index"):
            await store.advance(allowance_id, 0, 3, LaneState(3, b"x"))
        with pytest.raises(UsageError, match="lane"):
            await store.advance(allowance_id, -1, 0, LaneState(1, b"x"))
        with pytest.raises(UsageError, match=r"new\.index"):
            await store.advance(allowance_id, 0, 0, LaneState(2**53, b"x"))
        with pytest.raises(UsageError, match="anchors"):
            await store.create(os.urandom(16), b"t", 1, [], ACTIVE_10)
        with pytest.raises(UsageError, match="spent"):
            await store.create(os.urandom(16), b"t", 1, [b"a"], replace(ACTIVE_10, spent=1))
        with pytest.raises(UsageError, match="extra"):
            await store.update_state(allowance_id, ACTIVE_10, replace(ACTIVE_10, extra="a\x00b"))
        assert (await store.load(allowance_id)) is not None

    run(new_store, scenario)


# ---------------------------------------------------------------------------- advance


def test_advance_outcomes_follow_the_contract(new_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        aid = await new_allowance(store, ACTIVE_10, lanes=2)
        assert await store.advance(aid, 0, 0, LaneState(3, link(0, 3))) is Advance.OK
        assert await store.lane(aid, 0) == LaneState(3, link(0, 3))
        # A replay from the old index, and a going back, are stale and change nothing.
        assert await store.advance(aid, 0, 0, LaneState(4, link(0, 4))) is Advance.STALE
        assert await store.advance(aid, 0, 2, LaneState(3, link(0, 3))) is Advance.STALE
        assert await store.advance(aid, 0, 3, LaneState(4, link(0, 4))) is Advance.OK
        # Lanes share the calls paid for: 4 spent, 7 more would be 11 > 10.
        assert await store.advance(aid, 1, 0, LaneState(7, link(1, 7))) is Advance.OVER_LIMIT
        assert await store.lane(aid, 1) == LaneState(0, link(1, 0))
        assert await store.advance(aid, 1, 0, LaneState(6, link(1, 6))) is Advance.OK  # exactly 10
        assert await store.advance(aid, 0, 4, LaneState(5, link(0, 5))) is Advance.OVER_LIMIT
        # A stale index beats over-limit: the caller must reload before anything else.
        assert await store.advance(aid, 0, 1, LaneState(5, link(0, 5))) is Advance.STALE
        # No lane 2: as unknown as an unknown allowance.
        assert await store.advance(aid, 2, 0, LaneState(1, b"x")) is Advance.NOT_ACTIVE
        loaded = await store.load(aid)
        assert loaded is not None
        assert loaded.state == AllowanceState(Status.ACTIVE, 10, spent=10)
        assert loaded.lanes == (LaneState(4, link(0, 4)), LaneState(6, link(1, 6)))

        assert await store.advance(b"unknown", 0, 0, LaneState(1, b"x")) is Advance.NOT_ACTIVE
        for status in (Status.PENDING, Status.CLOSED):
            other = await new_allowance(store, AllowanceState(status, 10), lanes=1)
            # Not active wins over every other reason, and nothing moves.
            assert await store.advance(other, 0, 0, LaneState(1, b"x")) is Advance.NOT_ACTIVE
            assert await store.advance(other, 0, 5, LaneState(99, b"x")) is Advance.NOT_ACTIVE
            assert await store.lane(other, 0) == LaneState(0, link(0, 0))

    run(new_store, scenario)


def test_update_state_is_compare_and_set(new_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        pending = AllowanceState(Status.PENDING, 10)
        active = AllowanceState(Status.ACTIVE, 10, extra="paid")
        aid = await new_allowance(store, pending, lanes=1)
        # Each of status, paid_calls and extra must match.
        assert not await store.update_state(aid, ACTIVE_10, active)
        assert not await store.update_state(aid, AllowanceState(Status.PENDING, 9), active)
        assert not await store.update_state(aid, replace(pending, extra="x"), active)
        assert await store.update_state(aid, pending, active)
        assert not await store.update_state(aid, pending, active)  # activation happens once
        assert await store.advance(aid, 0, 0, LaneState(3, b"x")) is Advance.OK

        # Only extra changes (a batch invoice set once, even if two instances race):
        invoiced = replace(active, extra='{"batch_invoice": "lnbcrt..."}')
        assert await store.update_state(aid, active, invoiced)
        assert not await store.update_state(aid, active, replace(active, extra="other"))

        # A paid batch: spent is neither compared nor written.
        batch = AllowanceState(Status.ACTIVE, 20, spent=999, extra="")
        assert await store.update_state(aid, replace(invoiced, spent=12345), batch)
        loaded = await store.load(aid)
        assert loaded is not None
        assert loaded.state == AllowanceState(Status.ACTIVE, 20, spent=3, extra="")
        assert await store.advance(aid, 0, 3, LaneState(20, b"y")) is Advance.OK  # 20 <= 20

        closed = AllowanceState(Status.CLOSED, 20, extra="refund")
        assert await store.update_state(aid, batch, closed)
        assert await store.advance(aid, 0, 20, LaneState(21, b"z")) is Advance.NOT_ACTIVE
        assert not await store.update_state(b"unknown", pending, active)

    run(new_store, scenario)


def test_racing_compare_and_set_from_two_instances_exactly_one_wins(new_store: Factory) -> None:
    """Two instances set different batch invoices (or pay one refund) at once: one wins."""

    async def main() -> None:
        async with opened(new_store) as first, opened(new_store) as second:
            state = AllowanceState(Status.ACTIVE, 10)
            aid = await new_allowance(first, state, lanes=1)
            for round_ in range(50):
                news = [replace(state, extra=f"{round_} by {who}") for who in (0, 1)]
                written = await asyncio.gather(first.update_state(aid, state, news[0]),
                                               second.update_state(aid, state, news[1]))
                assert sorted(written) == [False, True]
                state = news[written.index(True)]
                loaded = await second.load(aid)
                assert loaded is not None and loaded.state == state

    asyncio.run(main())


def test_expiring_lists_pending_and_active_in_expiry_order(new_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        a = await new_allowance(store, AllowanceState(Status.PENDING, 5), expires_at=100)
        b = await new_allowance(store, AllowanceState(Status.ACTIVE, 5), expires_at=50)
        await new_allowance(store, AllowanceState(Status.CLOSED, 5), expires_at=10)
        d = await new_allowance(store, AllowanceState(Status.ACTIVE, 5), expires_at=300)
        assert await store.expiring(200) == [b, a]
        assert await store.expiring(50) == []  # strictly before
        assert await store.expiring(51) == [b]
        assert await store.expiring(1_000, limit=2) == [b, a]
        assert await store.update_state(b, AllowanceState(Status.ACTIVE, 5),
                                        AllowanceState(Status.CLOSED, 5))
        assert await store.expiring(1_000) == [a, d]
        assert await store.update_state(a, AllowanceState(Status.PENDING, 5),
                                        AllowanceState(Status.ACTIVE, 5))
        assert await store.expiring(1_000) == [a, d]

    run(new_store, scenario)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_store_reconnects_after_the_server_drops_its_connections(
        kind: str, request: pytest.FixtureRequest) -> None:
    """A failover or restart closes idle connections: the next call goes through anyway."""
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        factory: Factory = lambda: RedisAllowanceStore(url, prefix=os.urandom(8))  # noqa: E731

        def drop_connections() -> int:
            client = redis.Redis.from_url(url)
            try:
                return client.client_kill_filter(_type="normal", skipme=True)
            finally:
                client.close()
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        factory = lambda: PostgresAllowanceStore(dsn)  # noqa: E731

        def drop_connections() -> int:
            with psycopg.connect(dsn, autocommit=True) as conn:
                return len(conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                ).fetchall())

    async def scenario(store: AllowanceStore) -> None:
        aid = await new_allowance(store, lanes=1)
        assert await store.advance(aid, 0, 0, LaneState(1, b"a")) is Advance.OK
        assert drop_connections() >= 1
        assert await store.advance(aid, 0, 1, LaneState(2, b"b")) is Advance.OK
        loaded = await store.load(aid)
        assert loaded is not None and loaded.state.spent == 2

    run(factory, scenario)


# ------------------------------------------------------------------- concurrent attacks


def test_concurrent_double_spend_from_two_instances_exactly_one_wins(new_store: Factory) -> None:
    """Two server instances (two store objects, two connections) race every index."""

    async def main() -> None:
        async with opened(new_store) as first, opened(new_store) as second:
            aid = await new_allowance(first, AllowanceState(Status.ACTIVE, 100_000), lanes=1)
            rng = random.Random(7)
            index, wins = 0, []
            for _ in range(150):
                deltas = (rng.randint(1, 3), rng.randint(1, 3))
                racers = [(first, 0), (second, 1)]
                rng.shuffle(racers)
                outcomes = await asyncio.gather(*(
                    store.advance(aid, 0, index, LaneState(index + deltas[who], link(who, index)))
                    for store, who in racers))
                assert sorted(o.value for o in outcomes) == ["ok", "stale"]
                winner = racers[outcomes.index(Advance.OK)][1]
                wins.append(deltas[winner])
                index += deltas[winner]
                moved = LaneState(index, link(winner, index - deltas[winner]))
                assert await second.lane(aid, 0) == moved
            loaded = await first.load(aid)
            assert loaded is not None
            assert loaded.state.spent == sum(wins) == loaded.lanes[0].index

    asyncio.run(main())


def test_concurrent_lanes_never_spend_more_than_paid(new_store: Factory) -> None:
    """Eight racers on four lanes through two instances: exactly the calls paid, no more."""

    async def main() -> None:
        async with opened(new_store) as first, opened(new_store) as second:
            aid = await new_allowance(first, AllowanceState(Status.ACTIVE, 60), lanes=4)
            wins: list[int] = []

            async def racer(store: AllowanceStore, lane: int) -> None:
                while True:
                    current = await store.lane(aid, lane)
                    assert current is not None
                    outcome = await store.advance(aid, lane, current.index,
                                                  LaneState(current.index + 1, b"v"))
                    if outcome is Advance.OVER_LIMIT:
                        return
                    if outcome is Advance.OK:
                        wins.append(lane)

            await asyncio.gather(*(racer(s, lane) for s in (first, second) for lane in range(4)))
            loaded = await second.load(aid)
            assert loaded is not None
            assert len(wins) == loaded.state.spent == 60
            assert sum(lane.index for lane in loaded.lanes) == 60
            assert [wins.count(n) for n in range(4)] == [lane.index for lane in loaded.lanes]

    asyncio.run(main())


# ------------------------------------------------- refunds and unpaid allowances (all four)


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def every_store(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """As ``new_store``, and the in-memory store too."""
    return store_factory(request.param, request, tmp_path)


def refund(status: RefundStatus, attempt: int = 1, payment_hash: bytes = b"h" * 32,
           **fields: Any) -> Refund:
    return Refund(status, attempt, 1_234, payment_hash, f"lnbcrt-{attempt}", **fields)


CLOSED = AllowanceState(Status.CLOSED, 10, extra='{"refund": "due"}')


def test_the_refund_record_is_a_compare_and_set_on_closed_allowances(every_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        active = await new_allowance(store, ACTIVE_10)
        first = refund(RefundStatus.IN_FLIGHT)
        assert not await store.set_refund(active, None, first)  # not closed: nothing to refund
        assert not await store.set_refund(b"unknown", None, first)
        assert await store.refund(active) is None and await store.refund(b"unknown") is None

        aid = await new_allowance(store, CLOSED)
        assert await store.set_refund(aid, None, first)
        assert not await store.set_refund(aid, None, refund(RefundStatus.IN_FLIGHT, payment_hash=b"x" * 32))
        assert await store.refund(aid) == first
        assert await store.refunds_in_flight() == [aid]
        # Each of status, attempt and payment hash must match the record.
        failed = refund(RefundStatus.FAILED, reason="no route: é")
        for wrong in (refund(RefundStatus.FAILED), refund(RefundStatus.IN_FLIGHT, attempt=2),
                      refund(RefundStatus.IN_FLIGHT, payment_hash=b"x" * 32)):
            assert not await store.set_refund(aid, wrong, failed)
        assert await store.refund(aid) == first
        assert await store.set_refund(aid, first, failed)
        assert not await store.set_refund(aid, first, failed)  # it ends once
        assert await store.refunds_in_flight() == []
        second = refund(RefundStatus.IN_FLIGHT, attempt=2, payment_hash=b"y" * 32)
        assert await store.set_refund(aid, failed, second)
        paid = replace(second, status=RefundStatus.PAID, preimage=b"p" * 32)
        assert await store.set_refund(aid, second, paid)
        assert await store.refund(aid) == paid and await store.refunds_in_flight() == []
        # The allowance itself is untouched.
        loaded = await store.load(aid)
        assert loaded is not None and loaded.state == CLOSED

        with pytest.raises(UsageError, match="attempt"):
            await store.set_refund(aid, paid, replace(paid, attempt=0))
        with pytest.raises(UsageError, match="payment_hash"):
            await store.set_refund(aid, paid, replace(paid, payment_hash=b"short"))
        with pytest.raises(UsageError, match="invoice"):
            await store.set_refund(aid, paid, replace(paid, invoice="ln\x00bc"))
        assert await store.refund(aid) == paid

    run(every_store, scenario)


def test_racing_refund_claims_from_two_instances_exactly_one_wins(every_store: Factory) -> None:
    """Two instances record different invoices for one refund at once; then end it two ways."""

    async def main() -> None:
        async with opened(every_store) as first, opened(every_store) as second:
            for _ in range(20):
                aid = await new_allowance(first, CLOSED)
                claims = [refund(RefundStatus.IN_FLIGHT, payment_hash=bytes([who]) * 32) for who in (1, 2)]
                won = await asyncio.gather(first.set_refund(aid, None, claims[0]),
                                           second.set_refund(aid, None, claims[1]))
                assert sorted(won) == [False, True]
                winner = claims[won.index(True)]
                assert await second.refund(aid) == winner
                ends = [replace(winner, status=RefundStatus.PAID, preimage=b"p" * 32),
                        replace(winner, status=RefundStatus.FAILED, reason="gone")]
                won = await asyncio.gather(first.set_refund(aid, winner, ends[0]),
                                           second.set_refund(aid, winner, ends[1]))
                assert sorted(won) == [False, True]
                assert await first.refund(aid) == ends[won.index(True)]

    asyncio.run(main())


PENDING = AllowanceState(Status.PENDING, 0)


def test_unpaid_allowances_are_capped_listed_and_deleted_only_while_pending(
        every_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        a = os.urandom(16)
        await store.create(a, b"t", 900, [link(0, 0)], PENDING, unpaid_until=50, max_unpaid=2)
        b = await new_allowance(store, PENDING, expires_at=40)  # listed until its expiry
        assert await store.unpaid_count() == 2
        refused = os.urandom(16)
        with pytest.raises(StoreFull):  # 2 unpaid: the third is refused and nothing is written
            await store.create(refused, b"t", 900, [link(0, 0)], PENDING, max_unpaid=2)
        assert await store.load(refused) is None and await store.unpaid_count() == 2
        await store.create(os.urandom(16), b"t", 900, [link(0, 0)], ACTIVE_10, max_unpaid=2)  # paid ones don't count
        assert await store.unpaid_due(60) == [b, a]
        assert await store.unpaid_due(50) == [b]  # strictly before
        assert await store.unpaid_due(60, limit=1) == [b]

        assert await store.update_state(b, PENDING, AllowanceState(Status.ACTIVE, 10))  # paid
        assert await store.unpaid_count() == 1 and await store.unpaid_due(60) == [a]
        assert not await store.delete_unpaid(b)  # paid: never deleted
        assert await store.load(b) is not None
        c = os.urandom(16)
        await store.create(c, b"t", 900, [link(0, 0), link(1, 0)], PENDING, unpaid_until=70,
                           max_unpaid=2)
        assert await store.delete_unpaid(c)
        assert await store.load(c) is None and await store.lane(c, 1) is None
        assert not await store.delete_unpaid(c)
        assert await store.unpaid_count() == 1 and await store.unpaid_due(1_000) == [a]
        expiring = await store.expiring(1_000)
        assert c not in expiring and {a, b} <= set(expiring)  # the deleted one is gone from there too
        with pytest.raises(UsageError, match="max_unpaid"):
            await store.create(os.urandom(16), b"t", 9, [b"a"], PENDING, max_unpaid=-1)

    run(every_store, scenario)


def test_racing_creates_stay_under_the_unpaid_cap(every_store: Factory) -> None:
    async def main() -> None:
        async with opened(every_store) as first, opened(every_store) as second:
            async def create(store: AllowanceStore) -> bool:
                try:
                    await store.create(os.urandom(16), b"t", 900, [link(0, 0)], PENDING, max_unpaid=5)
                except StoreFull:
                    return False
                return True

            made = await asyncio.gather(*(create(s) for s in (first, second) * 10))
            assert sum(made) == 5 and await second.unpaid_count() == 5

    asyncio.run(main())


def test_deleting_an_unpaid_allowance_racing_its_activation_does_one_of_the_two(
        every_store: Factory) -> None:
    async def main() -> None:
        async with opened(every_store) as first, opened(every_store) as second:
            for _ in range(20):
                aid = await new_allowance(first, PENDING)
                deleted, activated = await asyncio.gather(
                    first.delete_unpaid(aid),
                    second.update_state(aid, PENDING, AllowanceState(Status.ACTIVE, 10)))
                assert deleted != activated
                loaded = await second.load(aid)
                assert (loaded is None) == deleted
                assert loaded is None or loaded.state.status is Status.ACTIVE

    asyncio.run(main())


class PaidAllowance:
    """A client's paid allowance of one lane, bought from a real AllowanceServer."""

    def __init__(self, terms: AllowanceTerms, tip: bytes, per_lane: int) -> None:
        self.terms = terms
        self.walker = ChainWalker.from_tip(tip, per_lane)
        self.tokens: dict[int, Token] = {}  # the walker hands each link out once

    @classmethod
    async def buy(cls, server: AllowanceServer, ledger: Ledger, per_lane: int) -> PaidAllowance:
        tip = lane_tip(os.urandom(32), 0)
        terms = await server.create(AllowanceRequest(per_lane, (anchor(tip, per_lane),), 0))
        ledger.pay_sync(terms.invoice)
        return cls(terms, tip, per_lane)

    def token(self, index: int) -> Token:
        if index not in self.tokens:
            self.tokens[index] = Token(self.terms.allowance_id, 0, index, self.walker.link(index))
        return self.tokens[index]


def api_server(store: AllowanceStore, ledger: Ledger) -> AllowanceServer:
    return AllowanceServer(store, ledger, ledger.node_id, ServerPolicy(Price(2)), payer=ledger)


def test_two_api_servers_serve_each_token_once_and_a_restart_loses_nothing(
        new_store: Factory) -> None:
    """The issue's attack at the server level: two API server instances, each with its own
    store connection, get the same token at once; then a third one starts cold."""

    async def main() -> None:
        ledger = Ledger()
        async with opened(new_store) as store_a, opened(new_store) as store_b:
            first, second = api_server(store_a, ledger), api_server(store_b, ledger)
            allowance = await PaidAllowance.buy(first, ledger, per_lane=60)
            for index in range(1, 31):
                token = allowance.token(index)
                results = await asyncio.gather(first.spend(token), second.spend(token),
                                               return_exceptions=True)
                served = [r for r in results if not isinstance(r, BaseException)]
                refusals = [r for r in results if isinstance(r, BaseException)]
                assert len(served) == 1, results
                assert isinstance(refusals[0], CallRefused) and refusals[0].code == "replayed"
        async with opened(new_store) as store_c:  # restarted: cold cache, new connection
            third = api_server(store_c, ledger)
            with pytest.raises(CallRefused, match=r"^replayed:"):
                await third.spend(allowance.token(30))
            assert (await third.spend(allowance.token(31))).remaining_calls == 60 - 31
            stored = await store_c.load(allowance.terms.allowance_id)
            assert stored is not None and stored.state.spent == 31

    asyncio.run(main())


def test_sqlite_double_spend_from_two_threads(tmp_path: Path) -> None:
    """Two threads, each its own connection to one file, start every round together."""
    path, rounds = tmp_path / "spent.db", 200
    setup = SqliteAllowanceStore(path, synchronous="NORMAL")
    aid = asyncio.run(new_allowance(setup, AllowanceState(Status.ACTIVE, rounds), lanes=1))
    barrier = threading.Barrier(2)
    results: dict[int, list[Advance]] = {}

    def worker(who: int) -> None:
        results[who] = asyncio.run(_race_rounds(path, aid, who, rounds, barrier.wait))

    threads = [threading.Thread(target=worker, args=(who,)) for who in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    _check_races(setup, aid, rounds, results)


def test_one_sqlite_store_object_shared_by_threads(tmp_path: Path) -> None:
    """A threaded server may share one store object: its transactions must not interleave."""
    store = SqliteAllowanceStore(tmp_path / "spent.db", synchronous="OFF")
    aid = asyncio.run(new_allowance(store, AllowanceState(Status.ACTIVE, 10_000), lanes=4))
    errors: list[BaseException] = []

    def worker(lane: int) -> None:
        async def spend() -> None:
            for index in range(150):
                outcome = await store.advance(aid, lane, index, LaneState(index + 1, b"v"))
                assert outcome is Advance.OK, (lane, index, outcome)
                assert await store.load(aid) is not None

        try:
            asyncio.run(spend())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(lane,)) for lane in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    loaded = asyncio.run(store.load(aid))
    assert loaded is not None and loaded.state.spent == 600
    asyncio.run(store.aclose())


@pytest.mark.slow
def test_sqlite_double_spend_from_two_processes(tmp_path: Path) -> None:
    """Two processes (as two server processes would), each round started together."""
    path, rounds = tmp_path / "spent.db", 200
    setup = SqliteAllowanceStore(path, synchronous="NORMAL")
    aid = asyncio.run(new_allowance(setup, AllowanceState(Status.ACTIVE, rounds), lanes=1))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    queue = context.Queue()
    processes = [context.Process(target=_race_process, args=(str(path), aid, who, rounds,
                                                             barrier, queue)) for who in (0, 1)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    _check_races(setup, aid, rounds, {who: [Advance(v) for v in r] for who, r in results.items()})


async def _race_rounds(path: Path | str, aid: bytes, who: int, rounds: int,
                       together: Callable[[], Any]) -> list[Advance]:
    """Round r: both racers advance lane 0 from index r to r + 1; the value says who."""
    store = SqliteAllowanceStore(path, synchronous="NORMAL")
    outcomes = []
    for index in range(rounds):
        together()
        outcomes.append(await store.advance(aid, 0, index, LaneState(index + 1, link(who, index))))
    await store.aclose()
    return outcomes


def _race_process(path: str, aid: bytes, who: int, rounds: int, barrier: Any,
                  queue: Any) -> None:
    outcomes = asyncio.run(_race_rounds(path, aid, who, rounds, barrier.wait))
    queue.put((who, [o.value for o in outcomes]))


def _check_races(store: SqliteAllowanceStore, aid: bytes, rounds: int,
                 results: dict[int, list[Advance]]) -> None:
    assert sorted(results) == [0, 1]
    for index in range(rounds):
        pair = sorted(results[who][index].value for who in (0, 1))
        assert pair == ["ok", "stale"], f"round {index}: {pair}"
    last_winner = 0 if results[0][-1] is Advance.OK else 1
    loaded = asyncio.run(store.load(aid))
    assert loaded is not None
    assert loaded.state.spent == rounds
    assert loaded.lanes == (LaneState(rounds, link(last_winner, rounds - 1)),)
    asyncio.run(store.aclose())


# --------------------------------------------------------------- SQLite against a model


@dataclass
class ModelAllowance:
    status: Status
    paid_calls: int
    expires_at: int
    extra: str = ""
    lanes: list[int] = field(default_factory=list)

    @property
    def spent(self) -> int:
        return sum(self.lanes)


IDS = [b"a", b"b", b"c"]
EXTRAS = ["", "x", '{"refund": "due"}', "é"]


class SqliteAgainstModel(RuleBasedStateMachine):
    """Random operations on a SQLite store and on a dict; they must always agree."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.mkdtemp(prefix="lightspeed-store-model-")
        self.path = Path(self.directory) / "spent.db"
        self.store = SqliteAllowanceStore(self.path, synchronous="OFF")
        self.model: dict[bytes, ModelAllowance] = {}

    def call(self, awaitable: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(awaitable)

    @initialize()
    def start(self) -> None:
        assert self.call(self.store.expiring(2**40)) == []

    @rule(aid=st.sampled_from(IDS), lanes=st.integers(1, 3),
          status=st.sampled_from(list(Status)), paid=st.integers(0, 12),
          expires_at=st.integers(0, 20))
    def create(self, aid: bytes, lanes: int, status: Status, paid: int, expires_at: int) -> None:
        anchors = [link(n, 0) for n in range(lanes)]
        if aid in self.model:
            with pytest.raises(StoreError):
                self.call(self.store.create(aid, b"t", expires_at, anchors,
                                            AllowanceState(status, paid)))
            return
        self.call(self.store.create(aid, b"t", expires_at, anchors, AllowanceState(status, paid)))
        self.model[aid] = ModelAllowance(status, paid, expires_at, lanes=[0] * lanes)

    @rule(aid=st.sampled_from(IDS), lane=st.integers(0, 3), use_current=st.booleans(),
          guess=st.integers(0, 8), delta=st.integers(1, 5))
    def advance(self, aid: bytes, lane: int, use_current: bool, guess: int, delta: int) -> None:
        allowance = self.model.get(aid)
        expected = guess
        if use_current and allowance is not None and lane < len(allowance.lanes):
            expected = allowance.lanes[lane]
        if (allowance is None or allowance.status is not Status.ACTIVE
                or lane >= len(allowance.lanes)):
            want = Advance.NOT_ACTIVE
        elif allowance.lanes[lane] != expected:
            want = Advance.STALE
        elif allowance.spent + delta > allowance.paid_calls:
            want = Advance.OVER_LIMIT
        else:
            want = Advance.OK
            allowance.lanes[lane] = expected + delta
        new = LaneState(expected + delta, link(lane, expected + delta))
        assert self.call(self.store.advance(aid, lane, expected, new)) is want

    @rule(aid=st.sampled_from(IDS), use_current=st.booleans(),
          guess_status=st.sampled_from(list(Status)), guess_paid=st.integers(0, 12),
          guess_extra=st.sampled_from(EXTRAS), status=st.sampled_from(list(Status)),
          paid=st.integers(0, 12), extra=st.sampled_from(EXTRAS))
    def update_state(self, aid: bytes, use_current: bool, guess_status: Status, guess_paid: int,
                     guess_extra: str, status: Status, paid: int, extra: str) -> None:
        allowance = self.model.get(aid)
        expected = AllowanceState(guess_status, guess_paid, extra=guess_extra)
        if use_current and allowance is not None:
            expected = AllowanceState(allowance.status, allowance.paid_calls, extra=allowance.extra)
        want = allowance is not None and (
            allowance.status, allowance.paid_calls, allowance.extra) == (
            expected.status, expected.paid_calls, expected.extra)
        written = self.call(self.store.update_state(aid, expected, AllowanceState(
            status, paid, extra=extra)))
        assert written == want
        if allowance is not None and want:
            allowance.status, allowance.paid_calls, allowance.extra = status, paid, extra

    @rule()
    def restart(self) -> None:
        self.call(self.store.aclose())
        self.store = SqliteAllowanceStore(self.path, synchronous="OFF")

    @rule(before=st.integers(0, 22))
    def expiring(self, before: int) -> None:
        got = self.call(self.store.expiring(before))
        live = [(a.expires_at, aid) for aid, a in self.model.items()
                if a.status is not Status.CLOSED and a.expires_at < before]
        assert sorted(got) == sorted(aid for _, aid in live)
        assert [self.model[aid].expires_at for aid in got] == sorted(e for e, _ in live)

    @invariant()
    def unpaid_are_the_pending_ones(self) -> None:
        pending = sorted(aid for aid, a in self.model.items() if a.status is Status.PENDING)
        assert self.call(self.store.unpaid_count()) == len(pending)
        assert sorted(self.call(self.store.unpaid_due(2**40))) == pending

    @invariant()
    def agrees_with_model(self) -> None:
        for aid in IDS:
            loaded = self.call(self.store.load(aid))
            allowance = self.model.get(aid)
            if allowance is None:
                assert loaded is None
                continue
            assert loaded is not None
            assert loaded.state == AllowanceState(allowance.status, allowance.paid_calls,
                                                  allowance.spent, allowance.extra)
            assert [lane.index for lane in loaded.lanes] == allowance.lanes
            assert loaded.state.spent <= max(allowance.paid_calls, loaded.state.spent)

    def teardown(self) -> None:
        self.call(self.store.aclose())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)


SqliteAgainstModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_sqlite_store_agrees_with_a_model = SqliteAgainstModel.TestCase


# ---------------------------------------------------------------------------- refunds (issue 11, item 2)


def _refund(status: RefundStatus, attempt: int = 1, tag: bytes = b"a") -> Refund:
    return Refund(status, attempt, 5_000, sha256(tag), f"lnbcrt-invoice-{tag.decode()}")


def test_the_refund_record_is_compare_and_set_and_only_for_closed_allowances(new_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        active = await new_allowance(store, ACTIVE_10, lanes=1)
        assert not await store.set_refund(active, None, _refund(RefundStatus.IN_FLIGHT))  # not closed
        closed = await new_allowance(store, AllowanceState(Status.CLOSED, 10), lanes=1)
        assert await store.refund(closed) is None
        in_flight = _refund(RefundStatus.IN_FLIGHT)
        assert await store.set_refund(closed, None, in_flight)
        assert not await store.set_refund(closed, None, _refund(RefundStatus.IN_FLIGHT, tag=b"b"))
        assert await store.refund(closed) == in_flight
        assert await store.refunds_in_flight() == [closed]
        paid = replace(in_flight, status=RefundStatus.PAID, preimage=b"\x01" * 32)
        other_attempt = replace(in_flight, attempt=2)
        assert not await store.set_refund(closed, other_attempt, paid)  # the attempt must match too
        assert await store.set_refund(closed, in_flight, paid)
        assert await store.refund(closed) == paid and await store.refunds_in_flight() == []
        assert not await store.set_refund(closed, in_flight, replace(in_flight, status=RefundStatus.FAILED))

    run(new_store, scenario)


def test_two_instances_claiming_one_refund_record_it_exactly_once(new_store: Factory) -> None:
    async def main() -> None:
        async with opened(new_store) as first, opened(new_store) as second:
            for round_ in range(20):
                aid = await new_allowance(first, AllowanceState(Status.CLOSED, 10), lanes=1)
                claims = [_refund(RefundStatus.IN_FLIGHT, tag=f"{round_}-{who}".encode()) for who in (0, 1)]
                written = await asyncio.gather(first.set_refund(aid, None, claims[0]),
                                               second.set_refund(aid, None, claims[1]))
                assert sorted(written) == [False, True]
                assert await second.refund(aid) == claims[written.index(True)]

    asyncio.run(main())
