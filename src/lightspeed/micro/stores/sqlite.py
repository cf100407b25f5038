"""The default spent-state store: one SQLite file in WAL mode, shareable by several processes.

Atomicity comes from SQLite's single writer: ``advance`` runs in a ``BEGIN IMMEDIATE``
transaction, which takes the database's write lock before reading anything, so the checks
(allowance active, lane at the expected index, within the calls paid for) and the two writes
(the lane, ``spent``) see and leave one consistent state even when several processes share
the file. A process that finds the lock held waits up to ``busy_timeout_ms``.

The stdlib ``sqlite3`` module is called synchronously inside the ``async`` methods: an
operation takes microseconds (plus one fsync per commit with ``synchronous="FULL"``), less
than handing it to a thread would cost. The event loop does block while another process
holds the write lock; for many busy server processes use Redis or PostgreSQL. One store
object may be shared by threads (a lock serializes its connection); each process opens its own.

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
from typing import TYPE_CHECKING

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
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refunds_in_flight ON refunds (status) WHERE status = 'in_flight';
"""

# The lane moves only if every condition holds on the state the write lock protects; the
# allowance's spent follows in the same transaction.
_MOVE_LANE = """
UPDATE lanes SET idx = :new, value = :value
WHERE allowance_id = :id AND lane = :lane AND idx = :expected
  AND EXISTS (SELECT 1 FROM allowances
              WHERE id = :id AND status = 'active' AND spent + :delta <= paid_calls)
"""


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
        except BaseException:
            self._db.close()
            raise

    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> _Transaction:
        return _Transaction(self._db, self._lock, begin, self.path)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """The connection's lock for a single read; file faults as AllowanceStoreUnavailable."""
        with self._lock, _faults(self.path):
            yield

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState, *,
                     unpaid_until: int | None = None, max_unpaid: int | None = None) -> None:
        check_create(allowance_id, expires_at, anchors, state)
        check_create_limits(unpaid_until, max_unpaid)
        try:
            with self._transaction():
                if state.status is Status.PENDING:
                    # Counted under the write lock: the cap holds across processes.
                    count = self._db.execute("SELECT count(*) FROM unpaid").fetchone()[0]
                    if max_unpaid is not None and count >= max_unpaid:
                        raise StoreFull(f"{max_unpaid} unpaid allowances exist already")
                    self._db.execute("INSERT INTO unpaid VALUES (?, ?)", (
                        allowance_id, expires_at if unpaid_until is None else unpaid_until))
                self._db.execute(
                    "INSERT INTO allowances VALUES (?, ?, ?, ?, ?, 0, ?)",
                    (allowance_id, terms, expires_at, state.status.value, state.paid_calls,
                     state.extra))
                self._db.executemany(
                    "INSERT INTO lanes VALUES (?, ?, 0, ?)",
                    [(allowance_id, lane, anchor) for lane, anchor in enumerate(anchors)])
        except sqlite3.IntegrityError:
            raise StoreError(f"allowance_id: {allowance_id.hex()} already exists") from None

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        with self._transaction("BEGIN"):  # deferred: one snapshot for both reads, no lock
            row = self._db.execute(
                "SELECT terms, expires_at, status, paid_calls, spent, extra FROM allowances "
                "WHERE id = ?", (allowance_id,)).fetchone()
            if row is None:
                return None
            lanes = self._db.execute(
                "SELECT idx, value FROM lanes WHERE allowance_id = ? ORDER BY lane",
                (allowance_id,)).fetchall()
        terms, expires_at, status, paid_calls, spent, extra = row
        return StoredAllowance(
            allowance_id, terms, expires_at,
            AllowanceState(Status(status), paid_calls, spent, extra),
            tuple(LaneState(index, value) for index, value in lanes))

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        with self._reading():
            row = self._db.execute(
                "SELECT idx, value FROM lanes WHERE allowance_id = ? AND lane = ?",
                (allowance_id, lane)).fetchone()
        return None if row is None else LaneState(row[0], row[1])

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        delta = check_advance(lane, expected_index, new)
        with self._transaction():
            moved = self._db.execute(_MOVE_LANE, {
                "id": allowance_id, "lane": lane, "expected": expected_index,
                "new": new.index, "value": new.value, "delta": delta}).rowcount
            if moved == 1:
                self._db.execute("UPDATE allowances SET spent = spent + ? WHERE id = ?",
                                 (delta, allowance_id))
                return Advance.OK
            # Refused: say why, from the same locked state.
            row = self._db.execute(
                "SELECT a.status, a.spent, a.paid_calls, l.idx FROM allowances a "
                "LEFT JOIN lanes l ON l.allowance_id = a.id AND l.lane = ? WHERE a.id = ?",
                (lane, allowance_id)).fetchone()
        if row is None or row[0] != Status.ACTIVE.value or row[3] is None:
            return Advance.NOT_ACTIVE
        if row[3] != expected_index:
            return Advance.STALE
        return Advance.OVER_LIMIT

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        check_state(new)
        with self._transaction():
            written = self._db.execute(
                "UPDATE allowances SET status = ?, paid_calls = ?, extra = ? "
                "WHERE id = ? AND status = ? AND paid_calls = ? AND extra = ?",
                (new.status.value, new.paid_calls, new.extra, allowance_id,
                 expected.status.value, expected.paid_calls, expected.extra)).rowcount
            if written == 1 and new.status is Status.PENDING:
                self._db.execute("INSERT OR IGNORE INTO unpaid SELECT id, expires_at FROM "
                                 "allowances WHERE id = ?", (allowance_id,))
            elif written == 1:
                self._db.execute("DELETE FROM unpaid WHERE id = ?", (allowance_id,))
        return written == 1

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        with self._reading():
            rows = self._db.execute(
                "SELECT id FROM allowances WHERE status <> 'closed' AND expires_at < ? "
                "ORDER BY expires_at LIMIT ?", (before, limit)).fetchall()
        return [row[0] for row in rows]

    async def unpaid_count(self) -> int:
        with self._reading():
            count: int = self._db.execute("SELECT count(*) FROM unpaid").fetchone()[0]
        return count

    async def unpaid_due(self, before: int, limit: int = 100) -> list[bytes]:
        with self._reading():
            rows = self._db.execute("SELECT id FROM unpaid WHERE until < ? ORDER BY until LIMIT ?",
                                    (before, limit)).fetchall()
        return [row[0] for row in rows]

    async def delete_unpaid(self, allowance_id: bytes) -> bool:
        with self._transaction():
            deleted = self._db.execute("DELETE FROM allowances WHERE id = ? AND status = 'pending'",
                                       (allowance_id,)).rowcount
            if deleted:
                for table, column in (("lanes", "allowance_id"), ("unpaid", "id"),
                                      ("refunds", "allowance_id")):
                    self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (allowance_id,))
        return deleted == 1

    async def refund(self, allowance_id: bytes) -> Refund | None:
        with self._reading():
            row = self._db.execute(
                "SELECT status, attempt, amount_msat, payment_hash, invoice, preimage, reason "
                "FROM refunds WHERE allowance_id = ?", (allowance_id,)).fetchone()
        if row is None:
            return None
        status, attempt, amount, payment_hash, invoice, preimage, reason = row
        return Refund(RefundStatus(status), attempt, amount, payment_hash, invoice, preimage, reason)

    async def set_refund(self, allowance_id: bytes, expected: Refund | None, new: Refund) -> bool:
        check_refund(new)
        with self._transaction():  # the write lock: the comparison and the write are one step
            closed = self._db.execute("SELECT 1 FROM allowances WHERE id = ? AND status = 'closed'",
                                      (allowance_id,)).fetchone()
            current = self._db.execute(
                "SELECT status, attempt, payment_hash FROM refunds WHERE allowance_id = ?",
                (allowance_id,)).fetchone()
            want = None if expected is None else (
                expected.status.value, expected.attempt, expected.payment_hash)
            if closed is None or current != want:
                return False
            self._db.execute("INSERT OR REPLACE INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                allowance_id, new.status.value, new.attempt, new.amount_msat, new.payment_hash,
                new.invoice, new.preimage, new.reason))
        return True

    async def refunds_in_flight(self, limit: int = 100) -> list[bytes]:
        with self._reading():
            rows = self._db.execute("SELECT allowance_id FROM refunds WHERE status = 'in_flight' "
                                    "LIMIT ?", (limit,)).fetchall()
        return [row[0] for row in rows]

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


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
