"""The default spent-state store: one SQLite file in WAL mode, shareable by several processes.

Atomicity comes from SQLite's single writer: ``advance`` runs in a ``BEGIN IMMEDIATE``
transaction, which takes the database's write lock before reading anything, so the checks
(allowance active, lane at the expected index, within the calls paid for) and the two writes
(the lane's index and link; what the allowance spent is the sum of its lanes) see and leave one consistent state even when several processes share
the file. A process that finds the lock held waits up to ``busy_timeout_ms``.

Writes never run on the event loop: a writer thread commits every write queued meanwhile in
one transaction, one fsync for the batch, and answers each caller only once that commit has
returned (see :mod:`._group_commit`). Reads (a few microseconds, never waiting for a lock in
WAL mode) run inline on a second connection, which sees every acknowledged write. Several
processes may share the file (SQLite's write lock serializes their batches; the wait happens
in the writer thread, not on the loop). One store object may be shared by threads, each
running its own event loop; each process opens its own.

``synchronous``: ``FULL`` (default) syncs the WAL at every commit, so an acknowledged advance
survives power loss; ``NORMAL`` only syncs at checkpoints (an advance may be lost on power
loss, never on a process crash: a lost advance means a token could be served once more);
``OFF`` leaves syncing to the OS.

An unknown lane counts as an unknown allowance: ``Advance.NOT_ACTIVE``.

A full disk, a read-only file or an I/O error raises :class:`AllowanceStoreUnavailable` naming
the file and the reason (the transaction is rolled back: nothing was written), never a raw
``sqlite3`` error; the ASGI middleware answers 503.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lightspeed.errors import UsageError, storage_fault
from lightspeed.micro.store import (
    Advance,
    AllowanceState,
    AllowanceStore,
    AllowanceStoreUnavailable,
    LaneState,
    Refund,
    RefundStatus,
    Status,
    StoredAllowance,
    StoreError,
    StoreFull,
)
from lightspeed.micro.stores._checks import (
    check_advance,
    check_create,
    check_create_limits,
    check_refund,
    check_state,
)
from lightspeed.micro.stores._group_commit import GroupCommitter

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS allowances (
    id BLOB PRIMARY KEY,
    terms BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    paid_calls INTEGER NOT NULL,
    spent INTEGER NOT NULL,
    extra TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lanes (
    allowance_id BLOB NOT NULL,
    lane INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (allowance_id, lane)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allowances_expiring ON allowances (expires_at)
    WHERE status <> 'closed';
CREATE INDEX IF NOT EXISTS allowances_cap ON allowances (id, status, paid_calls);
CREATE TABLE IF NOT EXISTS unpaid (
    id BLOB PRIMARY KEY,
    until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS unpaid_until ON unpaid (until);
INSERT OR IGNORE INTO unpaid SELECT id, expires_at FROM allowances WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS refunds (
    allowance_id BLOB PRIMARY KEY,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    amount_msat INTEGER NOT NULL,
    payment_hash BLOB NOT NULL,
    invoice TEXT NOT NULL,
    preimage BLOB NOT NULL,
    reason TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refunds_in_flight ON refunds (status) WHERE status = 'in_flight';
"""

# The lane moves only if every condition holds on the state the write lock protects. What an
# allowance has spent is the sum of its lanes' indices (each link is one call, every lane
# starts at 0), so a spend writes one row: the ``allowances.spent`` column of older files is
# no longer kept up to date nor read. A commit costs about 40 µs per page it writes (WAL,
# synchronous=NORMAL, measured on the 2-core machine): one page instead of two.
# The allowance's status and paid calls are read through ``allowances_cap``, a covering index of
# just (id, status, paid_calls): an allowance's row carries its terms and ``extra`` (a batch
# invoice, paid hashes: over 1 KB), and finding it in the table itself cost about twice the
# whole statement (measured 12-18 µs per move with 1 KB rows, 7-10 µs through the index). The
# planner picks the table's primary key unless told; the index is created with the schema, so an
# older file gets it when opened, and code that does not know it still keeps it up to date.
# Numbered parameters (?1 new index, ?2 value, ?3 id, ?4 lane, ?5 expected index, ?6 delta):
# binding a tuple costs about 1.5 µs less per call than binding names from a dict.
_MOVE_LANE = """
UPDATE lanes SET idx = ?1, value = ?2
WHERE allowance_id = ?3 AND lane = ?4 AND idx = ?5
  AND EXISTS (SELECT 1 FROM allowances INDEXED BY allowances_cap
              WHERE id = ?3 AND status = 'active'
                AND (SELECT sum(idx) FROM lanes WHERE allowance_id = ?3) + ?6 <= paid_calls)
"""
_SPENT = "(SELECT coalesce(sum(idx), 0) FROM lanes WHERE allowance_id = allowances.id)"


class SqliteAllowanceStore:
    """:class:`~lightspeed.micro.store.AllowanceStore` on a SQLite file (WAL mode)."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise UsageError(f"synchronous: {synchronous!r} is not one of {SYNCHRONOUS_MODES}")
        self.path = os.fspath(path)
        with _faults(self.path):
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            with _faults(self.path):
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise UsageError(f"path: {path!s} cannot use WAL mode (journal_mode={mode})")
                self._db.execute(f"PRAGMA synchronous={synchronous}")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                _add_refund_owner(self._db)
            with _faults(self.path):
                self._reader = sqlite3.connect(self.path, isolation_level=None,
                                               timeout=busy_timeout_ms / 1000, check_same_thread=False)
        except BaseException:
            self._db.close()
            raise
        # Without an fsync per commit, committing on the loop is cheaper than handing it over.
        self._writer = GroupCommitter(self._db, self.path, inline=synchronous != "FULL",
                                      busy_timeout_ms=busy_timeout_ms)

    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> _Transaction:
        """On the writing connection: only while opening (the writer thread owns it after)."""
        return _Transaction(self._db, self._lock, begin, self.path)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The reading connection, under its lock; file faults as AllowanceStoreUnavailable."""
        with self._lock, _faults(self.path):
            yield self._reader

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState, *,
                     unpaid_until: int | None = None, max_unpaid: int | None = None) -> None:
        check_create(allowance_id, expires_at, anchors, state)
        check_create_limits(unpaid_until, max_unpaid)

        def write(db: sqlite3.Connection) -> None:
            if state.status is Status.PENDING:
                # Counted under the write lock: the cap holds across processes.
                count = db.execute("SELECT count(*) FROM unpaid").fetchone()[0]
                if max_unpaid is not None and count >= max_unpaid:
                    raise StoreFull(f"{max_unpaid} unpaid allowances exist already")
            try:
                if state.status is Status.PENDING:
                    db.execute("INSERT INTO unpaid VALUES (?, ?)", (
                        allowance_id, expires_at if unpaid_until is None else unpaid_until))
                db.execute("INSERT INTO allowances VALUES (?, ?, ?, ?, ?, 0, ?)",
                           (allowance_id, terms, expires_at, state.status.value, state.paid_calls,
                            state.extra))
                db.executemany("INSERT INTO lanes VALUES (?, ?, 0, ?)",
                               [(allowance_id, lane, anchor) for lane, anchor in enumerate(anchors)])
            except sqlite3.IntegrityError:
                raise StoreError(f"allowance_id: {allowance_id.hex()} already exists") from None

        await self._writer.run(write, may_refuse=True)

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        with self._reading() as db:
            db.execute("BEGIN")  # deferred: one snapshot for both reads, no lock
            try:
                row, lanes = _load(db, allowance_id)
            finally:
                db.execute("COMMIT")
        if row is None:
            return None
        terms, expires_at, status, paid_calls, spent, extra = row
        return StoredAllowance(
            allowance_id, terms, expires_at,
            AllowanceState(Status(status), paid_calls, spent, extra),
            tuple(LaneState(index, value) for index, value in lanes))

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT idx, value FROM lanes WHERE allowance_id = ? AND lane = ?",
                (allowance_id, lane)).fetchone()
        return None if row is None else LaneState(row[0], row[1])

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        delta = check_advance(lane, expected_index, new)
        params = (new.index, new.value, allowance_id, lane, expected_index, delta)

        def write(db: sqlite3.Connection) -> Advance:
            if db.execute(_MOVE_LANE, params).rowcount == 1:
                return Advance.OK
            # Refused: say why, from the same locked state.
            row = db.execute(
                "SELECT a.status, a.paid_calls, l.idx FROM allowances a "
                "LEFT JOIN lanes l ON l.allowance_id = a.id AND l.lane = ? WHERE a.id = ?",
                (lane, allowance_id)).fetchone()
            if row is None or row[0] != Status.ACTIVE.value or row[2] is None:
                return Advance.NOT_ACTIVE
            return Advance.STALE if row[2] != expected_index else Advance.OVER_LIMIT

        return await self._writer.run(write)

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        check_state(new)

        def write(db: sqlite3.Connection) -> bool:
            written = db.execute(
                "UPDATE allowances SET status = ?, paid_calls = ?, extra = ? "
                "WHERE id = ? AND status = ? AND paid_calls = ? AND extra = ?",
                (new.status.value, new.paid_calls, new.extra, allowance_id,
                 expected.status.value, expected.paid_calls, expected.extra)).rowcount
            if written == 1 and new.status is Status.PENDING:
                db.execute("INSERT OR IGNORE INTO unpaid SELECT id, expires_at FROM "
                           "allowances WHERE id = ?", (allowance_id,))
            elif written == 1:
                db.execute("DELETE FROM unpaid WHERE id = ?", (allowance_id,))
            return bool(written == 1)

        return await self._writer.run(write)

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT id FROM allowances WHERE status <> 'closed' AND expires_at < ? "
                "ORDER BY expires_at LIMIT ?", (before, limit)).fetchall()
        return [row[0] for row in rows]

    async def unpaid_count(self) -> int:
        with self._reading() as db:
            count: int = db.execute("SELECT count(*) FROM unpaid").fetchone()[0]
        return count

    async def unpaid_due(self, before: int, limit: int = 100) -> list[bytes]:
        with self._reading() as db:
            rows = db.execute("SELECT id FROM unpaid WHERE until < ? ORDER BY until LIMIT ?",
                                    (before, limit)).fetchall()
        return [row[0] for row in rows]

    async def delete_unpaid(self, allowance_id: bytes) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            deleted = db.execute("DELETE FROM allowances WHERE id = ? AND status = 'pending'",
                                 (allowance_id,)).rowcount
            if deleted:
                for table, column in (("lanes", "allowance_id"), ("unpaid", "id"),
                                      ("refunds", "allowance_id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} = ?", (allowance_id,))
            return bool(deleted == 1)

        return await self._writer.run(write)

    async def refund(self, allowance_id: bytes) -> Refund | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT status, attempt, amount_msat, payment_hash, invoice, preimage, reason, owner "
                "FROM refunds WHERE allowance_id = ?", (allowance_id,)).fetchone()
        if row is None:
            return None
        status, attempt, amount, payment_hash, invoice, preimage, reason, owner = row
        return Refund(RefundStatus(status), attempt, amount, payment_hash, invoice, preimage, reason, owner)

    async def set_refund(self, allowance_id: bytes, expected: Refund | None, new: Refund) -> bool:
        check_refund(new)
        want = None if expected is None else (expected.status.value, expected.attempt, expected.payment_hash,
                                              expected.owner)

        def write(db: sqlite3.Connection) -> bool:  # under the write lock: compare and write are one step
            closed = db.execute("SELECT 1 FROM allowances WHERE id = ? AND status = 'closed'",
                                (allowance_id,)).fetchone()
            current = db.execute(
                "SELECT status, attempt, payment_hash, owner FROM refunds WHERE allowance_id = ?",
                (allowance_id,)).fetchone()
            if closed is None or current != want:
                return False
            db.execute("INSERT OR REPLACE INTO refunds (allowance_id, status, attempt, amount_msat, "
                       "payment_hash, invoice, preimage, reason, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                           allowance_id, new.status.value, new.attempt, new.amount_msat, new.payment_hash,
                           new.invoice, new.preimage, new.reason, new.owner))
            return True

        return await self._writer.run(write)

    async def refunds_in_flight(self, limit: int = 100) -> list[bytes]:
        with self._reading() as db:
            rows = db.execute("SELECT allowance_id FROM refunds WHERE status = 'in_flight' "
                                    "LIMIT ?", (limit,)).fetchall()
        return [row[0] for row in rows]

    async def aclose(self) -> None:
        await self._writer.aclose()
        with self._lock:
            self._reader.close()
            self._db.close()


def _add_refund_owner(db: sqlite3.Connection) -> None:
    """Files written before refunds named their paying node get the ``owner`` column, empty for
    the records already there (SQLite has no ``ADD COLUMN IF NOT EXISTS``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(refunds)")}
    if "owner" not in columns:
        db.execute("ALTER TABLE refunds ADD COLUMN owner TEXT NOT NULL DEFAULT ''")


def _load(db: sqlite3.Connection, allowance_id: bytes) -> tuple[Any, list[Any]]:
    row = db.execute(f"SELECT terms, expires_at, status, paid_calls, {_SPENT}, extra FROM allowances "
                     "WHERE id = ?", (allowance_id,)).fetchone()
    if row is None:
        return None, []
    lanes = db.execute("SELECT idx, value FROM lanes WHERE allowance_id = ? ORDER BY lane",
                       (allowance_id,)).fetchall()
    return row, lanes


@contextmanager
def _faults(path: str) -> Iterator[None]:
    """An SQLite error that says the file cannot be used (full, read-only, I/O) as AllowanceStoreUnavailable."""
    try:
        yield
    except sqlite3.Error as exc:
        fault = storage_fault(exc)
        if fault is None:
            raise
        raise AllowanceStoreUnavailable(path, fault) from None


class _Transaction:
    """The connection's lock, then ``begin`` ... ``COMMIT`` (``ROLLBACK`` on error).

    ``BEGIN IMMEDIATE`` takes the database's write lock up front (waiting out other
    processes up to the busy timeout); plain ``BEGIN`` reads one snapshot. A file fault
    (in the body or at the commit) rolls back and raises AllowanceStoreUnavailable.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, begin: str, path: str) -> None:
        self._db, self._lock, self._begin, self._path = db, lock, begin, path

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            with _faults(self._path):
                self._db.execute(self._begin)
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, *_: object) -> None:
        try:
            if kind is None:
                try:
                    with _faults(self._path):
                        self._db.execute("COMMIT")
                    return
                except BaseException:
                    self._rollback()
                    raise
            self._rollback()
            if isinstance(error, sqlite3.Error):
                fault = storage_fault(error)
                if fault is not None:
                    raise AllowanceStoreUnavailable(self._path, fault) from None
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        """SQLite may have rolled back by itself (a full disk): then there is nothing to undo."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: SqliteAllowanceStore) -> AllowanceStore:
        return store
