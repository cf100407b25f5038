"""The SQLite store's group commit: the event loop never waits for a commit, and nothing
acknowledged is lost when the process is killed (kill -9) in the middle of busy batches."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores import _group_commit
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

AID = b"k" * 16
LANES = 8


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_a_write_waiting_for_another_process_lock_does_not_block_the_event_loop(tmp_path: Path,
                                                                                  synchronous: str) -> None:
    """Before the writer thread, the loop sat in SQLite's busy wait for the whole 0.4 s. NORMAL
    commits on the loop when the lock is free: here it is not, and the thread waits instead."""
    path = tmp_path / "s.sqlite"

    async def go() -> None:
        store = SqliteAllowanceStore(path, synchronous=synchronous)
        await store.create(AID, b"t", 2**40, [b"\x00" * 32], AllowanceState(Status.ACTIVE, 10))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def release_later() -> None:
            await asyncio.sleep(0.4)
            other.execute("COMMIT")

        tick_task = asyncio.create_task(ticker())
        release = asyncio.create_task(release_later())
        started = time.perf_counter()
        assert await store.advance(AID, 0, 0, LaneState(1, b"\x01" * 32)) is Advance.OK
        waited = time.perf_counter() - started
        await release
        tick_task.cancel()
        other.close()
        assert waited >= 0.35  # it did wait for the lock...
        assert ticks >= 15, ticks  # ...while the loop went on (about 40 ticks of 10 ms)
        assert (await store.lane(AID, 0)) == LaneState(1, b"\x01" * 32)
        await store.aclose()

    asyncio.run(go())


def test_normal_commits_on_the_loop_in_batches_and_in_order(tmp_path: Path) -> None:
    """synchronous=NORMAL: the writes of one loop turn share one transaction on the loop; each
    caller gets its own result (a stale advance is refused alone), and all of it is on disk."""

    async def go() -> None:
        store = SqliteAllowanceStore(tmp_path / "s.sqlite", synchronous="NORMAL")
        await store.create(AID, b"t", 2**40, [bytes(32)] * LANES, AllowanceState(Status.ACTIVE, 100))
        results = await asyncio.gather(
            *(store.advance(AID, n, 0, LaneState(1, bytes([n + 1]) * 32)) for n in range(LANES)),
            store.advance(AID, 0, 0, LaneState(2, b"\xff" * 32)))  # same turn, already moved: stale
        assert results == [Advance.OK] * LANES + [Advance.STALE]
        assert store._writer.inline_batches == 2  # the create, then one batch for all nine
        await store.aclose()
        reopened = SqliteAllowanceStore(tmp_path / "s.sqlite", synchronous="NORMAL")
        stored = await reopened.load(AID)
        assert stored is not None and stored.state.spent == LANES
        assert [lane.value for lane in stored.lanes] == [bytes([n + 1]) * 32 for n in range(LANES)]
        await reopened.aclose()

    asyncio.run(go())


_SPENDER = """
import asyncio, sys
from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores import _group_commit
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

async def main(path, synchronous):
    store = SqliteAllowanceStore(path, synchronous=synchronous)  # FULL: fsync per batch; NORMAL: on the loop
    await store.create(b"k" * 16, b"t", 2**40, [bytes(32)] * 8, AllowanceState(Status.ACTIVE, 10**9))
    print("READY", flush=True)

    async def lane(n):
        i = 0
        while True:
            result = await store.advance(b"k" * 16, n, i, LaneState(i + 1, (i + 1).to_bytes(32, "big")))
            assert result is Advance.OK, result
            i += 1
            sys.stdout.write(f"{n} {i}\\n")  # acknowledged: the call would be served now
            sys.stdout.flush()

    await asyncio.gather(*(lane(n) for n in range(8)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_kill_9_during_group_commits_loses_no_acknowledged_advance(tmp_path: Path, synchronous: str) -> None:
    """NORMAL skips the fsync, not the commit: a killed process (not a power loss) keeps every
    acknowledged advance either way."""
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _SPENDER, str(path), synchronous], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    acked = [0] * LANES
    deadline = time.monotonic() + 1.0
    lines = 0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lane, index = map(int, line.split())
        acked[lane] = max(acked[lane], index)
        lines += 1
    os.kill(proc.pid, signal.SIGKILL)  # mid-batch: writes queued, one transaction in flight
    proc.wait()
    for line in proc.stdout:  # acknowledgements written before the kill, not yet read
        if line.count(" ") == 1 and line.endswith("\n"):
            lane, index = map(int, line.split())
            acked[lane] = max(acked[lane], index)
    assert lines > 50 and all(acked), acked  # the batches were busy when killed

    async def check() -> None:
        store = SqliteAllowanceStore(path)
        stored = await store.load(AID)
        assert stored is not None
        indices = [lane.index for lane in stored.lanes]
        for n in range(LANES):
            # Every acknowledged advance is on disk; at most the one in flight beyond it.
            assert acked[n] <= indices[n] <= acked[n] + 1, (n, acked[n], indices[n])
            assert stored.lanes[n].value == indices[n].to_bytes(32, "big")
        assert stored.state.spent == sum(indices)  # lane and spent committed together
        await store.aclose()

    asyncio.run(check())


def test_checkpoints_run_in_their_own_thread_and_keep_the_wal_bounded(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's automatic checkpoint ran in the commit that crossed 1,000 WAL pages, on the event
    loop, and fsynced the database file there (milliseconds). The writing connection has it off;
    a thread of the store checkpoints instead, and the WAL stays bounded all the same."""
    monkeypatch.setattr(_group_commit, "CHECKPOINT_EVERY", 100)
    path = tmp_path / "s.sqlite"

    async def go() -> None:
        store = SqliteAllowanceStore(path, synchronous="NORMAL")
        assert store._writer._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        await store.create(AID, b"t", 2**40, [bytes(32)], AllowanceState(Status.ACTIVE, 10**9))
        for i in range(2000):  # one batch (one commit, one WAL page at least) each
            assert await store.advance(AID, 0, i, LaneState(i + 1, i.to_bytes(32, "big"))) is Advance.OK
            if i % 100 == 99:
                await asyncio.sleep(0.005)  # room for the checkpoint thread on a busy machine
        assert store._writer.checkpoints >= 5
        wal_pages = os.path.getsize(f"{path}-wal") // 4096
        # Never checkpointed: 2,000 pages and more (a page a commit at least). The WAL restarts from
        # its beginning only after a checkpoint caught up, which a loaded machine delays (1,609
        # pages seen once under a load average of 8), so the bound is "reused", not "small".
        assert wal_pages < 2000, wal_pages
        await store.aclose()
        reopened = SqliteAllowanceStore(path)
        assert await reopened.lane(AID, 0) == LaneState(2000, (1999).to_bytes(32, "big"))
        await reopened.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_the_wal_starts_again_under_writes_that_never_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            synchronous: str) -> None:
    """Writers that never pause (streams: a lane move every 100 µs) kept every PASSIVE checkpoint
    from letting the WAL start again: each pass copied what it saw while new frames came in, so
    the WAL grew without end (600 MB in 20 s at 1,000 streams). The checkpoint's last pass is now
    a RESTART, which holds the write lock, and the WAL is used again from its beginning."""
    monkeypatch.setattr(_group_commit, "CHECKPOINT_EVERY", 100)
    path = tmp_path / "s.sqlite"
    writers, moves = 4, 1500

    async def go() -> None:
        store = SqliteAllowanceStore(path, synchronous=synchronous)
        ids = [bytes([n]) * 16 for n in range(writers)]
        for aid in ids:
            await store.create(aid, b"t", 2**40, [bytes(32)], AllowanceState(Status.ACTIVE, 10**9))

        async def write(aid: bytes) -> None:
            for i in range(moves):  # no pause: each loop turn commits the writers' moves together
                assert await store.advance(aid, 0, i, LaneState(i + 1, i.to_bytes(32, "big"))) is Advance.OK

        batches = store._writer.batches
        await asyncio.gather(*(write(aid) for aid in ids))
        batches = store._writer.batches - batches
        assert batches >= 1500, batches  # a WAL page a batch at least: 1,500 pages if never started again
        for _ in range(200):  # the last checkpoint asked for may still be running
            if store._writer.wal_restarts >= 3:
                break
            await asyncio.sleep(0.01)
        assert store._writer.wal_restarts >= 3
        wal_pages = os.path.getsize(f"{path}-wal") // 4096
        assert wal_pages < batches // 2, (wal_pages, batches)
        await store.aclose()
        reopened = SqliteAllowanceStore(path)
        for aid in ids:
            assert await reopened.lane(aid, 0) == LaneState(moves, (moves - 1).to_bytes(32, "big"))
        await reopened.aclose()

    asyncio.run(go())


_STEADY = """
import asyncio, os, sys
from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores import _group_commit
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

_group_commit.CHECKPOINT_EVERY = 100

async def main(path, me, moves):
    store = SqliteAllowanceStore(path, synchronous="NORMAL")
    ids = [bytes([me, n]) * 8 for n in range(4)]
    for aid in ids:
        await store.create(aid, b"t", 2**40, [bytes(32)], AllowanceState(Status.ACTIVE, 10**9))

    async def write(aid):
        for i in range(moves):
            assert await store.advance(aid, 0, i, LaneState(i + 1, bytes(32))) is Advance.OK

    await asyncio.gather(*(write(aid) for aid in ids))
    for _ in range(200):
        if store._writer.wal_restarts >= 2:
            break
        await asyncio.sleep(0.01)
    print(store._writer.batches, store._writer.wal_restarts, os.path.getsize(path + "-wal"), flush=True)
    await store.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_the_wal_starts_again_with_two_processes_writing_without_pause(tmp_path: Path) -> None:
    """Two processes on one file (two server workers), both writing all the time: a checkpoint
    pass that held only its own process's lock could not stop the other's writes; the RESTART
    pass takes the database's write lock, so each process's checkpoints start the WAL again."""
    path = tmp_path / "s.sqlite"

    async def setup() -> None:
        await SqliteAllowanceStore(path, synchronous="NORMAL").aclose()

    asyncio.run(setup())
    procs = [subprocess.Popen([sys.executable, "-c", _STEADY, str(path), str(me), "1500"], stdout=subprocess.PIPE,
                              text=True) for me in (1, 2)]
    outcomes = [tuple(map(int, proc.communicate(timeout=120)[0].split())) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    batches = sum(b for b, _, _ in outcomes)
    assert batches >= 2000, outcomes  # a WAL page a batch at least: 2,000 pages if never started again
    assert all(restarts >= 2 for _, restarts, _ in outcomes), outcomes
    wal_pages = max(size for _, _, size in outcomes) // 4096  # its size before the last one closed it
    assert wal_pages < batches // 2, outcomes


def test_the_writer_thread_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    """The thread waits for another process's lock itself (the writing connection has no busy
    timeout of its own, so the loop never waits): up to ``busy_timeout_ms``, then the write fails
    and nothing of it is written."""
    path = tmp_path / "s.sqlite"

    async def go() -> None:
        store = SqliteAllowanceStore(path, synchronous="NORMAL", busy_timeout_ms=300)
        await store.create(AID, b"t", 2**40, [bytes(32)], AllowanceState(Status.ACTIVE, 10))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started = time.perf_counter()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.advance(AID, 0, 0, LaneState(1, b"\x01" * 32))
        waited = time.perf_counter() - started
        other.execute("COMMIT")
        other.close()
        assert 0.25 <= waited < 2.0, waited
        assert await store.lane(AID, 0) == LaneState(0, bytes(32))
        assert await store.advance(AID, 0, 0, LaneState(1, b"\x01" * 32)) is Advance.OK  # the lock is free
        await store.aclose()

    asyncio.run(go())


_RACER = """
import asyncio, sys
from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

async def main(path, until):
    store = SqliteAllowanceStore(path, synchronous="NORMAL")
    won = []

    async def racer():
        while True:
            lane = await store.lane(b"k" * 16, 0)
            if lane.index >= until:
                return
            new = LaneState(lane.index + 1, (lane.index + 1).to_bytes(32, "big"))
            if await store.advance(b"k" * 16, 0, lane.index, new) is Advance.OK:
                won.append(new.index)

    await asyncio.gather(*(racer() for _ in range(3)))
    print(" ".join(map(str, won)))
    await store.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_four_processes_racing_on_one_lane_each_index_is_won_exactly_once(tmp_path: Path) -> None:
    """Four processes on one file (as four server workers), three tasks each, all moving the same
    lane: inline commits, batches handed to the thread when another process holds the lock, and
    the thread's own waits for it never let two writers win the same index (a call served
    twice), and none is lost."""
    path = tmp_path / "s.sqlite"
    until = 400

    async def setup() -> None:
        store = SqliteAllowanceStore(path, synchronous="NORMAL")
        await store.create(AID, b"t", 2**40, [bytes(32)], AllowanceState(Status.ACTIVE, 10**6))
        await store.aclose()

    asyncio.run(setup())
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(path), str(until)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    won = [int(i) for proc in procs for i in proc.communicate(timeout=120)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(won) == list(range(1, until + 1))  # every index once: no double win, none lost

    async def check() -> None:
        store = SqliteAllowanceStore(path)
        assert await store.lane(AID, 0) == LaneState(until, until.to_bytes(32, "big"))
        stored = await store.load(AID)
        assert stored is not None and stored.state.spent == until
        await store.aclose()

    asyncio.run(check())
