"""Spent-state stores: atomic lane advances per second on SQLite, Redis and PostgreSQL, each
beside the physical floor of its backend measured in the same run.

The floors: SQLite, an empty ``BEGIN IMMEDIATE``/``COMMIT`` and a one-row write commit (what a
durable commit costs at that ``synchronous`` setting); Redis, a ``PING`` round trip; PostgreSQL,
a ``SELECT 1`` round trip and a one-row write commit. An advance can't beat its floor; the
ratio shows what the atomic check-and-update adds. Each store is measured sequentially (one
task: latency) and with concurrent tasks (each on its own allowance, as separate clients are).

Servers are started here, on loopback, as the tests start them: Redis without persistence
(its floor and its advance alike never touch the disk), PostgreSQL durable (fsync and
synchronous_commit on) and again with fsync off, SQLite in a temporary file with
``synchronous`` FULL and NORMAL. The advance and its floors are measured in alternating
slices, so a slow spell of a shared disk hits both alike; on a busy machine the fsync-bound
figures still swing by 10x from run to run, the ratios much less.

``python -m benchmarks stores [--seconds S] [--tasks N] [--threads N] [--pool N] [--only ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import psycopg
from redis.asyncio import Redis
from tests.support.servers import postgres_server, redis_server

from benchmarks._util import report
from lightspeed.micro.store import AllowanceState, AllowanceStore, LaneState, Status
from lightspeed.micro.stores.postgres import PostgresAllowanceStore
from lightspeed.micro.stores.redis import RedisAllowanceStore
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

Op = Callable[[], Awaitable[Any]]
PAID = 10**12


class Figures:
    """Operations per second and median latency of one measured run."""

    def __init__(self, latencies_ns: list[int], wall_s: float) -> None:
        self.latencies_ns = latencies_ns
        self.wall_s = wall_s
        self.per_s = len(latencies_ns) / wall_s
        self.median_us = statistics.median(latencies_ns) / 1000

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.latencies_ns + other.latencies_ns, self.wall_s + other.wall_s)


async def measure(ops: list[Op], seconds: float, into: list[int] | None = None) -> Figures:
    """Run each of ``ops`` in its own task, back to back, for ``seconds``; time every call.

    ``into`` collects the latencies of several threads' runs (list.extend is atomic).
    """
    latencies: list[int] = []
    for op in ops:  # warm up: connections opened, scripts and statements cached
        for _ in range(20):
            await op()

    async def worker(op: Op) -> None:
        # at least one timed call, even when the window is over before this task first runs (a
        # window of a few milliseconds on a loaded machine had none, and no median: CI, once)
        while True:
            start = time.perf_counter_ns()
            await op()
            latencies.append(time.perf_counter_ns() - start)
            if time.perf_counter() >= deadline:
                return
            if len(ops) > 1:
                await asyncio.sleep(0)  # let the other tasks in, even if op never waited

    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(worker(op) for op in ops))
    wall = time.perf_counter() - start
    if into is not None:
        into.extend(latencies)
    return Figures(latencies, wall)


def advancer(store: AllowanceStore, allowance_id: bytes) -> Op:
    """An op that spends one call on lane 0, tracking its index (a fresh index every call)."""
    index = 0

    async def op() -> None:
        nonlocal index
        outcome = await store.advance(allowance_id, 0, index, LaneState(index + 1, b"\x07" * 32))
        assert outcome.value == "ok", outcome
        index += 1

    return op


async def advancers(store: AllowanceStore, count: int) -> list[Op]:
    ops = []
    for _ in range(count):
        allowance_id = os.urandom(16)
        await store.create(allowance_id, b"terms", 2**40, [b"\x00" * 32],
                           AllowanceState(Status.ACTIVE, PAID))
        ops.append(advancer(store, allowance_id))
    return ops


Row = list[Any]
Concurrent = Callable[[float], Awaitable[Figures]]
ROUNDS = 5  # advance and floors alternate, so a slow spell of the disk hits both alike


def in_threads(setups: list[Callable[[], Awaitable[tuple[Op, Op]]]]) -> Concurrent:
    """Each setup in its own thread and event loop (as separate server processes would run):
    it returns the op to time and a closing op."""

    async def concurrent(seconds: float) -> Figures:
        latencies: list[int] = []
        walls: list[float] = []
        barrier = threading.Barrier(len(setups))

        errors: list[BaseException] = []

        def thread_main(setup: Callable[[], Awaitable[tuple[Op, Op]]]) -> None:
            async def main() -> None:
                op, close = await setup()
                barrier.wait()
                figures = await measure([op], seconds, latencies)
                walls.append(figures.wall_s)
                await close()
            try:
                asyncio.run(main())
            except BaseException as error:  # re-raised in the caller's thread below
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=thread_main, args=(s,)) for s in setups]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return Figures(latencies, max(walls))

    return concurrent


def in_tasks(ops: list[Op]) -> Concurrent:
    return lambda seconds: measure(ops, seconds)


def add(total: Figures | None, more: Figures) -> Figures:
    return more if total is None else total + more


async def bench_store(name: str, label: str, store: AllowanceStore, concurrent: Concurrent,
                      floors: dict[str, tuple[Op, Concurrent]], seconds: float,
                      ) -> tuple[list[Row], dict[str, Any]]:
    """One row per floor: the store's figures beside that floor's, sequential and concurrent.

    Each figure is measured in ``ROUNDS`` slices, the advance and its floors taking turns.
    """
    sequential = await advancers(store, 1)
    seq = par = None
    floor_seq: dict[str, Figures] = {}
    floor_par: dict[str, Figures] = {}
    for _ in range(ROUNDS):
        seq = add(seq, await measure(sequential, seconds / ROUNDS))
        par = add(par, await concurrent(seconds / ROUNDS))
        for floor_name, (floor_op, floor_concurrent) in floors.items():
            floor_seq[floor_name] = add(floor_seq.get(floor_name),
                                        await measure([floor_op], seconds / ROUNDS))
            floor_par[floor_name] = add(floor_par.get(floor_name),
                                        await floor_concurrent(seconds / ROUNDS))
    assert seq is not None and par is not None
    rows, summary = [], {f"{name}_advance_per_s": round(seq.per_s),
                         f"{name}_advance_median_us": round(seq.median_us, 1),
                         f"{name}_advance_per_s_concurrent": round(par.per_s),
                         f"{name}_concurrency": label}
    for floor_name in floors:
        fseq, fpar = floor_seq[floor_name], floor_par[floor_name]
        rows.append([name, floor_name, round(seq.per_s), seq.median_us, fseq.median_us,
                     f"{seq.median_us / fseq.median_us:.1f}x", label, round(par.per_s),
                     round(fpar.per_s)])
        key = floor_name.replace(" ", "_").lower()
        summary[f"{name}_floor_{key}_median_us"] = round(fseq.median_us, 1)
        summary[f"{name}_floor_{key}_per_s_concurrent"] = round(fpar.per_s)
    await store.aclose()
    return rows, summary


async def bench_sqlite(path: Path, synchronous: str, threads: int,
                       seconds: float) -> tuple[list[Row], dict[str, Any]]:
    """SQLite: concurrency is several threads with a connection each, sharing the file."""

    async def advance_setup() -> tuple[Op, Op]:
        store = SqliteAllowanceStore(path, synchronous=synchronous)
        return (await advancers(store, 1))[0], store.aclose

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE IF NOT EXISTS floor (k INTEGER PRIMARY KEY, v INTEGER)")
        return db

    def empty_op(db: sqlite3.Connection) -> Op:
        async def op() -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
        return op

    def write_op(db: sqlite3.Connection) -> Op:
        key = int.from_bytes(os.urandom(4), "big")  # a row of its own

        async def op() -> None:
            db.execute("INSERT OR REPLACE INTO floor VALUES (?, ?)", (key, time.time_ns()))
        return op

    Setup = Callable[[], Awaitable[tuple[Op, Op]]]

    def floor_setup(make: Callable[[sqlite3.Connection], Op]) -> Setup:
        async def setup() -> tuple[Op, Op]:
            db = connect()

            async def close() -> None:
                db.close()
            return make(db), close
        return setup

    db = connect()
    floors = {name: (make(db), in_threads([floor_setup(make)] * threads))
              for name, make in (("empty txn", empty_op), ("write commit", write_op))}
    store = SqliteAllowanceStore(path, synchronous=synchronous)
    return await bench_store(f"sqlite_{synchronous.lower()}", f"{threads} thr", store,
                             in_threads([advance_setup] * threads), floors, seconds)


async def bench_redis(url: str, tasks: int, seconds: float) -> tuple[list[Row], dict[str, Any]]:
    client = Redis.from_url(url)
    await client.ping()
    store = RedisAllowanceStore(url)
    ping: Op = client.ping
    floors = {"PING": (ping, in_tasks([ping] * tasks))}
    try:
        return await bench_store("redis", f"{tasks} tasks", store,
                                 in_tasks(await advancers(store, tasks)), floors, seconds)
    finally:
        await client.aclose()


async def bench_postgres(name: str, dsn: str, tasks: int, pool: int,
                         seconds: float) -> tuple[list[Row], dict[str, Any]]:
    """Floors run ``tasks`` ops over ``pool`` connections, as the store shares its own pool."""
    idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    connections = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(pool)]
    for conn in connections:
        idle.put_nowait(conn)
    await connections[0].execute("CREATE TABLE IF NOT EXISTS floor (k int PRIMARY KEY, v bigint)")

    def pooled(query: str) -> Op:
        async def op() -> None:
            conn = await idle.get()
            try:
                await conn.execute(query)
            finally:
                idle.put_nowait(conn)
        return op

    # Each writer updates its own row: one shared row would measure lock waits instead.
    writes = []
    for k in range(tasks):
        await pooled(f"INSERT INTO floor VALUES ({k}, 0) ON CONFLICT DO NOTHING")()
        writes.append(pooled(f"UPDATE floor SET v = v + 1 WHERE k = {k}"))
    floors = {"SELECT 1": (pooled("SELECT 1"), in_tasks([pooled("SELECT 1")] * tasks)),
              "write commit": (writes[0], in_tasks(writes))}
    store = PostgresAllowanceStore(dsn, pool_size=pool)
    try:
        return await bench_store(name, f"{tasks} tasks", store,
                                 in_tasks(await advancers(store, tasks)), floors, seconds)
    finally:
        for conn in connections:
            await conn.close()


async def run(seconds: float, tasks: int, threads: int, pool: int, only: set[str]) -> None:
    rows: list[Row] = []
    summary: dict[str, Any] = {"benchmark": "stores", "seconds_per_figure": seconds}
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ls-bench-")))
        results = []
        if "sqlite" in only:
            for synchronous in ("FULL", "NORMAL"):
                path = directory / f"spent-{synchronous}.db"
                results.append(await bench_sqlite(path, synchronous, threads, seconds))
        if "redis" in only:
            redis = stack.enter_context(redis_server())
            results.append(await bench_redis(redis.url, tasks, seconds))
        if "postgres" in only:
            # Durable (every commit waits for its WAL fsync), then without fsync: the second
            # shows what the statement itself costs beside a round trip.
            for durable in (True, False):
                with postgres_server(durable=durable) as postgres:
                    name = f"postgres{'' if durable else '_nofsync'}_pool{pool}"
                    results.append(await bench_postgres(name, postgres.dsn, tasks, pool, seconds))
        for part, numbers in results:
            rows += part
            summary.update(numbers)
    report(f"Spent-state stores: atomic advances beside each backend's floor, sequential (median "
           f"latency) and concurrent ({os.cpu_count()} CPUs; Redis without persistence)",
           ["store", "floor", "advance/s", "advance us", "floor us", "ratio", "concurrent",
            "advance/s", "floor/s"],
           rows, summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measured figure")
    parser.add_argument("--tasks", type=int, default=16,
                        help="concurrent tasks (Redis, PostgreSQL)")
    parser.add_argument("--threads", type=int, default=4,
                        help="concurrent threads, a connection each (SQLite)")
    parser.add_argument("--pool", type=int, default=4, help="PostgreSQL connections")
    parser.add_argument("--only", default="sqlite,redis,postgres",
                        help="comma-separated stores to measure")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.tasks, args.threads, args.pool,
                    set(args.only.split(","))))


if __name__ == "__main__":
    main()
