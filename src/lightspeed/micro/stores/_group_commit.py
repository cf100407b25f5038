"""Group commit for the SQLite store: one writer thread, one transaction and one fsync per batch.

Called on the event loop, a SQLite commit blocks it for the fsync (and for as long as another
process holds the write lock): measured under load, 46% of the store's time went to stalls
over 1 ms. Here the event loop only queues a write and awaits its future; a thread runs every
write queued meanwhile in ONE ``BEGIN IMMEDIATE`` transaction, each in a savepoint of its
own where it may refuse after writing (a create), and commits once. The batch forms by itself: whatever arrived during the previous
commit's fsync goes in the next one, so an idle store adds no delay and a busy one pays one
fsync for many calls.

The guarantee is unchanged: every write still runs atomically under the database's write
lock, in arrival order, and no caller learns its result before the COMMIT that made it
durable has returned. A write that fails on its own (a duplicate id, a full cap) is rolled
back to its savepoint and fails alone. A file fault (full disk, read-only file, I/O error) at
any point, in a statement or at the commit, rolls back the whole batch and fails every write
in it: none of them is acknowledged, so none is lost.

``inline`` (for ``synchronous=NORMAL`` or ``OFF``, where a commit writes the WAL without an
fsync: about 40 µs a page): the writes queued during one turn of the event loop are committed
on the loop itself, at the end of that turn, when the write lock is free at once. Handing each
batch to the thread cost more than the commit: the queue ``put`` waited for the GIL while the
writer thread held it (about 90 µs per call, profiled), and every result came back through
``call_soon_threadsafe``. When another process holds the write lock (``BEGIN IMMEDIATE`` is
refused at once, no busy wait on the loop) or the thread is busy, the batch goes to the thread
as before, so the loop never waits for another process. The guarantee is the same: a caller
learns its result only after the COMMIT that made it durable against a process crash.

Two costs are kept off the loop as well. Checkpoints: SQLite's automatic checkpoint runs in the
commit that crosses 1,000 WAL pages and fsyncs the database file there, on the loop (measured
with one-write transactions: 45 µs of wall time each with it, 31 µs without). The writing
connection has it turned off;
every ``CHECKPOINT_EVERY`` batches a thread of its own checkpoints on a connection of its own:
PASSIVE passes beside the writers, then a short RESTART pass under the write lock, without
which the WAL never starts again under a steady load (``GroupCommitter._checkpoint``). And the
busy timeout: the writing connection has none (an inline ``BEGIN IMMEDIATE`` must fail at once, and toggling the
pragma around it cost two statements a batch); the writer thread waits for another process's
lock itself, in short sleeps, up to ``busy_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lightspeed.errors import storage_fault
from lightspeed.micro.store import AllowanceStoreUnavailable, StoreError

T = TypeVar("T")

MAX_BATCH = 512  # writes in one transaction (bounds how long the write lock is held)
#: Batches committed between two checkpoints: each writes at least one WAL page, so at least
#: SQLite's own default of 1,000 pages (a batch of a few lane moves writes more: the WAL stays
#: at 25-40 MB in the stream benchmark's 1,000 streams).
CHECKPOINT_EVERY = 1000
#: Checkpoint passes beside the writers before the RESTART pass, which holds the write lock: the
#: second copies only what was appended during the first, so the RESTART has little left.
_UNLOCKED_PASSES = 2
_RESTART_WAIT = 0.05  # seconds the RESTART pass waits for a writer or reader (the write lock held meanwhile)
_BUSY_SLEEPS = (0.0002, 0.0005, 0.001, 0.002, 0.005)  # the writer thread's waits for the lock, then 5 ms each

Write = Callable[[sqlite3.Connection], Any]


class _Job:
    __slots__ = ("alone", "failed", "future", "loop", "outcome", "write")

    def __init__(self, write: Write, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop,
                 alone: bool) -> None:
        self.write, self.future, self.loop, self.alone = write, future, loop, alone
        self.outcome: Any = None
        self.failed = False


class GroupCommitter:
    """Runs writes on ``db`` in a thread of its own, many per transaction (see the module)."""

    def __init__(self, db: sqlite3.Connection, path: str, inline: bool = False, busy_timeout_ms: int = 5000) -> None:
        self._db, self._path = db, path
        self._inline, self._busy_timeout_ms = inline, busy_timeout_ms
        db.execute("PRAGMA busy_timeout = 0")  # the thread waits for the lock itself (_begin_waiting)
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it, off the loop
        self.checkpoints = 0  # checkpoints run (for tests)
        self.wal_restarts = 0  # of them, those after which the WAL starts again from its beginning
        self._checkpoint_due = threading.Event()
        self._db_lock = threading.Lock()  # the connection: the writer thread, or an inline batch on a loop
        self._pending: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # inline: this turn's writes per loop
        self.inline_batches = 0  # batches committed on the loop (for tests and benchmarks)
        self.batches = 0  # batches committed in all (on the loop and by the thread)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"sqlite-writer {path}", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name=f"sqlite-checkpoint {path}",
                                              daemon=True)
        self._checkpointer.start()

    def run(self, write: Callable[[sqlite3.Connection], T], may_refuse: bool = False) -> asyncio.Future[T]:
        """``write(db)`` inside a transaction: the future of its result, set once that transaction
        is committed (await it).

        A future, not a coroutine: the caller's task resumes straight from it, one frame less at
        each wake-up (a stream's tick awaits one lane move; its wake-ups resumed a chain of a
        dozen frames, ~20% of the server's CPU at 1,000 streams, profiled).

        ``may_refuse``: the write may raise (a duplicate id, a full cap) after writing part of
        its rows; it then runs in a savepoint and fails alone. Any other write that raises
        fails its whole batch (nothing of it committed).
        """
        if self._closed:
            raise StoreError(f"{self._path}: the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(write, future, loop, may_refuse)
        if self._inline:
            pending = self._pending.get(loop)
            if pending is None:
                pending = self._pending[loop] = []
                loop.call_soon(self._flush_inline, loop)
            pending.append(job)
        else:
            self._queue.put(job)
        return future

    def _flush_inline(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit this turn's writes on the loop if the write lock is free now, else hand them to the thread."""
        batch = self._pending.pop(loop, [])
        if not batch:
            return
        if not self._db_lock.acquire(blocking=False):  # the thread is committing: queue behind it
            for job in batch:
                self._queue.put(job)
            return
        try:
            try:
                began = self._begin_now()
            except BaseException as exc:
                began = True  # a file fault: the batch fails here, as the thread would fail it
                error = _as_fault(exc, self._path)
                for job in batch:
                    job.outcome, job.failed = error, True
            else:
                if began:
                    try:
                        self._apply(batch)
                    except BaseException as exc:
                        error = _as_fault(exc, self._path)
                        for job in batch:
                            job.outcome, job.failed = error, True
                    self.inline_batches += 1
        finally:
            self._db_lock.release()
        if not began:  # another process holds the write lock: the thread waits for it, not the loop
            for job in batch:
                self._queue.put(job)
            return
        _settle(batch)

    def _begin_now(self) -> bool:
        """``BEGIN IMMEDIATE`` without waiting: False if another connection holds the write lock."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return False
            raise
        return True

    def _begin_waiting(self) -> None:
        """``BEGIN IMMEDIATE``, waiting up to the busy timeout for another process's lock (thread only).

        Short sleeps first: another process holds the lock for one batch, well under a
        millisecond with ``synchronous=NORMAL``; SQLite's own busy handler sleeps 1 ms, then more."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        attempt = 0
        while not self._begin_now():
            if time.monotonic() >= deadline:
                self._db.execute("BEGIN IMMEDIATE")  # raises "database is locked", as before
                return
            time.sleep(_BUSY_SLEEPS[min(attempt, len(_BUSY_SLEEPS) - 1)])
            attempt += 1

    def _committed(self) -> None:
        """Count a committed batch; every ``CHECKPOINT_EVERY``, wake the checkpoint thread."""
        self.batches += 1
        if self.batches % CHECKPOINT_EVERY == 0:
            self._checkpoint_due.set()

    def _checkpoint_loop(self) -> None:
        """Checkpoints on a connection of this thread, each time ``CHECKPOINT_EVERY`` batches ask (see
        :meth:`_checkpoint`); a busy or failed one is retried at the next (the WAL only grows
        meanwhile, nothing is lost)."""
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closed:
                    return
                try:
                    if db is None:
                        db = sqlite3.connect(self._path, isolation_level=None, timeout=_RESTART_WAIT)
                    self._checkpoint(db)
                    self.checkpoints += 1
                except sqlite3.Error:
                    pass
        finally:
            if db is not None:
                db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        """Copy the WAL into the database and let the next write start the WAL again from its beginning.

        PASSIVE passes copy the bulk while the writers go on. Alone they never let the WAL start
        again under a steady load: SQLite starts it again only at a write that begins with every
        frame copied, and the writers append frames while a pass copies. So the WAL grew without
        end (measured at 1,000 streams: 35 MB a second, 600 MB in 20 s), and each commit cost
        more, in new file pages, than one into a WAL in use. The last pass is a RESTART: it takes
        the database's write lock (of every process on the file), copies what the passes before
        left (0.7 ms median, 2.6 ms at most in a run of 34) and returns once the next writer will
        start the WAL again. Meanwhile this process's loop finds the lock taken and hands its
        writes to the writer thread, which waits for it: nothing waits on the loop. It waits at
        most ``_RESTART_WAIT`` for another writer or a reader to finish; if one is still
        there, the checkpoint is only partial and the next one tries again."""
        frames = 0
        for _ in range(_UNLOCKED_PASSES):
            frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        if frames > 0 and db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0:
            self.wal_restarts += 1

    async def aclose(self) -> None:
        """Finish the queued writes, then stop the threads (the connection stays open)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._checkpoint_due.set()
        await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._checkpointer.join)

    # -- the writer thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            try:
                self._commit(batch)
            except BaseException as exc:
                error = _as_fault(exc, self._path)
                for job in batch:
                    job.outcome, job.failed = error, True
            _deliver(batch)

    def _commit(self, batch: list[_Job]) -> None:
        with self._db_lock:
            self._begin_waiting()
            self._apply(batch)

    def _apply(self, batch: list[_Job]) -> None:
        """Run ``batch`` in the transaction just begun and commit it (roll back on a fault)."""
        db = self._db
        try:
            for job in batch:
                if not job.alone:  # a conditional update: it refuses by changing nothing
                    job.outcome = job.write(db)
                    continue
                db.execute("SAVEPOINT write")
                try:
                    job.outcome = job.write(db)
                except Exception as exc:
                    if storage_fault(exc) is not None or not db.in_transaction:
                        raise  # the file is unusable (or SQLite undid the batch): fail them all
                    db.execute("ROLLBACK TO write")
                    job.outcome, job.failed = exc, True
                db.execute("RELEASE write")
            db.execute("COMMIT")
            self._committed()
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise


def _as_fault(exc: BaseException, path: str) -> BaseException:
    """A file fault as AllowanceStoreUnavailable (naming the file and why); others unchanged."""
    if isinstance(exc, sqlite3.Error):
        fault = storage_fault(exc)
        if fault is not None:
            return AllowanceStoreUnavailable(path, fault)
    return exc


def _deliver(batch: list[_Job]) -> None:
    """Hand the outcomes to their event loops: one wake-up per loop per batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in batch:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled: its write stands, nobody to tell
            continue
        if job.failed:
            job.future.set_exception(job.outcome)
        else:
            job.future.set_result(job.outcome)
