"""Spent-state store on PostgreSQL (psycopg 3, async): many API server instances, one view.

Every operation but ``create`` (a short transaction: the allowance, its lanes, its unpaid
entry; a create capped by ``max_unpaid`` first takes an advisory lock so that the count and
the insert are one step) is one statement in autocommit mode, so one round trip. ``advance``
calls ``lightspeed_advance``, a PL/pgSQL function (part of the schema) that takes a batch of
advances and, for each in turn, locks the allowance row and then the lane row (``FOR NO KEY
UPDATE``), checks the three conditions on the locked, newest versions, and updates the lane
and ``spent`` together. Locking first matters: under READ COMMITTED a plain conditional
``UPDATE`` that reads the lane from its snapshot could charge ``spent`` for a lane move a
concurrent statement had already made. Every advance locks the allowance row before its
lane, and a batch takes its allowances in id order, so advances on one allowance are
serialized (they have to be: they share ``spent``) and batches cannot deadlock. The same
locked rows tell a refusal's reason exactly.

Batches (``_batch``): the advances made while one statement is in flight go together in the
next one. Concurrent calls on one allowance all wait for its row lock, so one at a time each
paid a commit (an fsync) and psycopg's per-statement cost; a batch pays them once. Each
advance is still checked on its own, in order, and none is acknowledged before the
statement has committed; an error in it rolls the whole batch back.

Connections: psycopg_pool is not a dependency, so the store keeps a small pool of its own
(``pool_size``, default 4, opened on demand). One connection behind a lock would make every
request of a server instance wait for the previous one's round trip; a few connections let
concurrent requests overlap. A reused connection found dead (server restart, failover) is
replaced and the statement run once more, which is safe (see ``_run``). The schema is created
on first use (``CREATE ... IF NOT EXISTS`` under an advisory lock: concurrent ``CREATE TABLE
IF NOT EXISTS`` statements can collide).

An unknown lane counts as an unknown allowance: ``Advance.NOT_ACTIVE``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

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
from lightspeed.micro.stores._batch import TurnBatcher
from lightspeed.micro.stores._checks import (
    check_advance,
    check_create,
    check_create_limits,
    check_refund,
    check_state,
)
from lightspeed.micro.stores._pg_pool import Connection, PgPool

_SCHEMA_LOCK = 0x4C53_4D49  # advisory lock key ("LSMI") serializing schema creation

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS allowances (
        id bytea PRIMARY KEY,
        terms bytea NOT NULL,
        expires_at bigint NOT NULL,
        status text NOT NULL,
        paid_calls bigint NOT NULL,
        spent bigint NOT NULL,
        extra text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS lanes (
        allowance_id bytea NOT NULL REFERENCES allowances (id) ON DELETE CASCADE,
        lane integer NOT NULL,
        idx bigint NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (allowance_id, lane))""",
    """CREATE INDEX IF NOT EXISTS allowances_expiring ON allowances (expires_at)
        WHERE status <> 'closed'""",
    """CREATE TABLE IF NOT EXISTS unpaid (
        id bytea PRIMARY KEY REFERENCES allowances (id) ON DELETE CASCADE,
        until bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS unpaid_until ON unpaid (until)",
    """INSERT INTO unpaid SELECT id, expires_at FROM allowances WHERE status = 'pending'
        ON CONFLICT DO NOTHING""",
    """CREATE TABLE IF NOT EXISTS refunds (
        allowance_id bytea PRIMARY KEY REFERENCES allowances (id) ON DELETE CASCADE,
        status text NOT NULL,
        attempt bigint NOT NULL,
        amount_msat bigint NOT NULL,
        payment_hash bytea NOT NULL,
        invoice text NOT NULL,
        preimage bytea NOT NULL,
        reason text NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS refunds_in_flight ON refunds (allowance_id)
        WHERE status = 'in_flight'""",
    # The node paying the refund; empty in the records of versions before it (Refund.owner).
    # Looked up first: ALTER TABLE takes an exclusive lock on refunds even when it has nothing
    # to add, and every process runs this schema when it starts.
    """DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                       AND table_name = 'refunds' AND column_name = 'owner') THEN
            ALTER TABLE refunds ADD COLUMN owner text NOT NULL DEFAULT '';
        END IF;
    END $$""",
    # A batch of advances, in order, in the calling statement's transaction (the caller sorts
    # it by allowance id). The first advance of each allowance locks its row (FOR NO KEY
    # UPDATE: the newest version, waiting for a concurrent batch to commit) and reads status,
    # spent and paid_calls; the advances of that allowance then keep ``spent`` in a variable,
    # and it is written once when the batch moves on to the next allowance or ends. Every
    # writer of a lane holds its allowance's row lock, so a lane moves with one conditional
    # UPDATE (``idx = expected``); only a refused advance reads its lane, to say why. One row
    # out per advance: the allowance's status, the lane's index (NULL when missing; not read
    # when it moved) and whether it moved. Profiled: one statement per advance plus one per
    # allowance, where locking and updating the allowance for each advance cost the backend
    # about twice the CPU.
    """CREATE OR REPLACE FUNCTION lightspeed_advance(
        p_ids bytea[], p_lanes integer[], p_expected bigint[], p_new bigint[], p_values bytea[],
        OUT o_status text, OUT o_idx bigint, OUT o_moved boolean)
    RETURNS SETOF record LANGUAGE plpgsql AS $$
    DECLARE
        a_id bytea := NULL;
        a_status text;
        a_spent bigint;
        a_start bigint;
        a_paid bigint;
    BEGIN
        FOR n IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
            IF a_id IS DISTINCT FROM p_ids[n] THEN
                IF a_spent IS DISTINCT FROM a_start THEN
                    UPDATE allowances SET spent = a_spent WHERE id = a_id;
                END IF;
                a_id := p_ids[n];
                a_status := NULL;
                a_spent := NULL;
                SELECT a.status, a.spent, a.paid_calls INTO a_status, a_spent, a_paid
                    FROM allowances a WHERE a.id = a_id FOR NO KEY UPDATE;
                a_start := a_spent;
            END IF;
            o_status := a_status;
            o_idx := NULL;
            o_moved := false;
            IF a_status = 'active' AND a_spent + p_new[n] - p_expected[n] <= a_paid THEN
                UPDATE lanes SET idx = p_new[n], value = p_values[n]
                    WHERE allowance_id = a_id AND lane = p_lanes[n] AND idx = p_expected[n];
                o_moved := FOUND;
            END IF;
            IF o_moved THEN
                a_spent := a_spent + p_new[n] - p_expected[n];
            ELSIF a_status IS NOT NULL THEN
                SELECT l.idx INTO o_idx FROM lanes l
                    WHERE l.allowance_id = a_id AND l.lane = p_lanes[n];
            END IF;
            RETURN NEXT;
        END LOOP;
        IF a_spent IS DISTINCT FROM a_start THEN
            UPDATE allowances SET spent = a_spent WHERE id = a_id;
        END IF;
    END $$""",
)

_UNPAID_LOCK = 0x4C53_554E  # advisory lock key ("LSUN") serializing capped creates

# One statement: the compare-and-set, and the unpaid list following the status.
_UPDATE_STATE = """
WITH u AS (
    UPDATE allowances SET status = %(new_status)s, paid_calls = %(new_paid)s, extra = %(new_extra)s
    WHERE id = %(id)s AND status = %(status)s AND paid_calls = %(paid)s AND extra = %(extra)s
    RETURNING id, expires_at
), gone AS (
    DELETE FROM unpaid WHERE id IN (SELECT id FROM u) AND %(new_status)s::text <> 'pending'
), back AS (
    INSERT INTO unpaid SELECT id, expires_at FROM u WHERE %(new_status)s::text = 'pending'
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM u
"""

_INSERT_REFUND = """
INSERT INTO refunds (allowance_id, status, attempt, amount_msat, payment_hash, invoice, preimage, reason, owner)
SELECT %(id)s, %(status)s, %(attempt)s, %(amount)s, %(hash)s, %(invoice)s, %(preimage)s, %(reason)s, %(owner)s
WHERE EXISTS (SELECT 1 FROM allowances WHERE id = %(id)s AND status = 'closed')
ON CONFLICT (allowance_id) DO NOTHING
"""

_UPDATE_REFUND = """
UPDATE refunds SET status = %(status)s, attempt = %(attempt)s, amount_msat = %(amount)s,
    payment_hash = %(hash)s, invoice = %(invoice)s, preimage = %(preimage)s, reason = %(reason)s,
    owner = %(owner)s
WHERE allowance_id = %(id)s AND status = %(old_status)s AND attempt = %(old_attempt)s
  AND payment_hash = %(old_hash)s AND owner = %(old_owner)s
  AND EXISTS (SELECT 1 FROM allowances WHERE id = %(id)s AND status = 'closed')
"""

_ADVANCE = """
SELECT o_status, o_idx, o_moved FROM lightspeed_advance(
    %s::bytea[], %s::integer[], %s::bigint[], %s::bigint[], %s::bytea[]) WITH ORDINALITY
ORDER BY ordinality
"""

_LOAD = """
SELECT a.terms, a.expires_at, a.status, a.paid_calls, a.spent, a.extra,
       array_agg(l.idx ORDER BY l.lane), array_agg(l.value ORDER BY l.lane)
FROM allowances a JOIN lanes l ON l.allowance_id = a.id
WHERE a.id = %s
GROUP BY a.id
"""

_AdvanceArgs = tuple[bytes, int, int, int, bytes]  # allowance id, lane, expected, new index, value
T = TypeVar("T")


def _int_array(values: list[int]) -> str:
    """An array literal (``{1,2}``): as text it costs psycopg far less than a list to adapt."""
    return "{" + ",".join(map(str, values)) + "}"


def _bytea_array(values: list[bytes]) -> str:
    r"""A bytea array literal: each element quoted hex (``{"\\x0102"}``; the array parser
    takes the doubled backslash for one)."""
    return "{" + ",".join(['"\\\\x' + value.hex() + '"' for value in values]) + "}"


class PostgresAllowanceStore:
    """:class:`~lightspeed.micro.store.AllowanceStore` on PostgreSQL (``dsn``: a libpq string)."""

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        self._pool = PgPool(dsn, pool_size, _SCHEMA, _SCHEMA_LOCK)
        self._advances: TurnBatcher[_AdvanceArgs, tuple[Any, ...]] = TurnBatcher(self._advance_batch)

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection; once more on a new one if a reused one was dead.

        A connection that sat idle may have been closed by the server (restart, failover,
        idle timeout). Running the statement again is safe even if the first run committed
        before the connection dropped: a repeated ``advance`` finds its lane moved (STALE), a
        repeated ``update_state`` finds the state changed (False), a repeated ``create`` finds
        the id taken (StoreError). Each fails closed; nothing is spent or written twice.
        """
        return await self._pool.run(work)

    async def _fetchall(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        async def work(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query, params)
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
            return rows

        return await self._run(work)

    async def _fetchone(self, query: str, params: Any) -> tuple[Any, ...] | None:
        rows = await self._fetchall(query, params)
        return rows[0] if rows else None

    async def _rowcount(self, query: str, params: Any) -> int:
        async def work(conn: Connection) -> int:
            return (await conn.execute(query, params)).rowcount

        return await self._run(work)

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState, *,
                     unpaid_until: int | None = None, max_unpaid: int | None = None) -> None:
        check_create(allowance_id, expires_at, anchors, state)
        check_create_limits(unpaid_until, max_unpaid)
        pending = state.status is Status.PENDING

        async def work(conn: Connection) -> None:
            async with conn.transaction():
                if pending and max_unpaid is not None:
                    # Capped creates take turns, so the count and the insert are one step.
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_UNPAID_LOCK,))
                    cursor = await conn.execute("SELECT count(*) FROM unpaid")
                    row = await cursor.fetchone()
                    if row is not None and row[0] >= max_unpaid:
                        raise StoreFull(f"{max_unpaid} unpaid allowances exist already")
                await conn.execute(
                    "INSERT INTO allowances VALUES (%s, %s, %s, %s, %s, 0, %s)",
                    (allowance_id, terms, expires_at, state.status.value, state.paid_calls,
                     state.extra))
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO lanes VALUES (%s, %s, 0, %s)",
                        [(allowance_id, lane, anchor) for lane, anchor in enumerate(anchors)])
                if pending:
                    await conn.execute("INSERT INTO unpaid VALUES (%s, %s)", (
                        allowance_id, expires_at if unpaid_until is None else unpaid_until))

        try:
            await self._run(work)
        except psycopg.errors.UniqueViolation:
            raise StoreError(f"allowance_id: {allowance_id.hex()} already exists") from None

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        row = await self._fetchone(_LOAD, (allowance_id,))
        if row is None:
            return None
        terms, expires_at, status, paid_calls, spent, extra, indices, values = row
        return StoredAllowance(
            allowance_id, bytes(terms), expires_at,
            AllowanceState(Status(status), paid_calls, spent, extra),
            tuple(LaneState(i, bytes(v)) for i, v in zip(indices, values, strict=True)))

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        row = await self._fetchone(
            "SELECT idx, value FROM lanes WHERE allowance_id = %s AND lane = %s",
            (allowance_id, lane))
        return None if row is None else LaneState(row[0], bytes(row[1]))

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        check_advance(lane, expected_index, new)
        status, index, moved = await self._advances.submit(
            (allowance_id, lane, expected_index, new.index, new.value))
        if moved:
            return Advance.OK
        if status != Status.ACTIVE.value or index is None:
            return Advance.NOT_ACTIVE
        if index != expected_index:
            return Advance.STALE
        return Advance.OVER_LIMIT

    async def _advance_batch(self, batch: Sequence[_AdvanceArgs]) -> list[tuple[Any, ...]]:
        """The advances of one batch: one statement (``lightspeed_advance``), one round trip,
        one commit.

        They run in allowance id order (a stable sort: the advances of one allowance keep
        their order), as every batch does, so two server processes' batches lock rows in the
        same order and cannot deadlock. Autocommit makes the statement its own transaction:
        its rows come back only once it has committed, and if anything in it fails, every
        advance of the batch is rolled back and fails.
        """
        order = sorted(range(len(batch)), key=lambda n: batch[n][0])
        rows = await self._fetchall(_ADVANCE, [
            _bytea_array([batch[n][0] for n in order]),
            _int_array([batch[n][1] for n in order]),
            _int_array([batch[n][2] for n in order]),
            _int_array([batch[n][3] for n in order]),
            _bytea_array([batch[n][4] for n in order])])
        if len(rows) != len(batch):
            raise StoreError(f"lightspeed_advance returned {len(rows)} rows for {len(batch)} advances")
        results: list[tuple[Any, ...]] = [()] * len(batch)
        for n, row in zip(order, rows, strict=True):
            results[n] = row
        return results

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        check_state(new)
        row = await self._fetchone(_UPDATE_STATE, {
            "id": allowance_id, "status": expected.status.value, "paid": expected.paid_calls,
            "extra": expected.extra, "new_status": new.status.value, "new_paid": new.paid_calls,
            "new_extra": new.extra})
        return row is not None and row[0] == 1

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        rows = await self._fetchall(
            "SELECT id FROM allowances WHERE status <> 'closed' AND expires_at < %s "
            "ORDER BY expires_at LIMIT %s", (before, limit))
        return [bytes(row[0]) for row in rows]

    async def unpaid_count(self) -> int:
        row = await self._fetchone("SELECT count(*) FROM unpaid", ())
        return 0 if row is None else int(row[0])

    async def unpaid_due(self, before: int, limit: int = 100) -> list[bytes]:
        rows = await self._fetchall(
            "SELECT id FROM unpaid WHERE until < %s ORDER BY until LIMIT %s", (before, limit))
        return [bytes(row[0]) for row in rows]

    async def delete_unpaid(self, allowance_id: bytes) -> bool:
        # The lanes, the unpaid entry and any refund go with it (ON DELETE CASCADE).
        deleted = await self._rowcount(
            "DELETE FROM allowances WHERE id = %s AND status = 'pending'", (allowance_id,))
        return deleted == 1

    async def refund(self, allowance_id: bytes) -> Refund | None:
        row = await self._fetchone(
            "SELECT status, attempt, amount_msat, payment_hash, invoice, preimage, reason, owner "
            "FROM refunds WHERE allowance_id = %s", (allowance_id,))
        if row is None:
            return None
        status, attempt, amount, payment_hash, invoice, preimage, reason, owner = row
        return Refund(RefundStatus(status), attempt, amount, bytes(payment_hash), invoice,
                      bytes(preimage), reason, owner)

    async def set_refund(self, allowance_id: bytes, expected: Refund | None, new: Refund) -> bool:
        check_refund(new)
        params: dict[str, Any] = {
            "id": allowance_id, "status": new.status.value, "attempt": new.attempt,
            "amount": new.amount_msat, "hash": new.payment_hash, "invoice": new.invoice,
            "preimage": new.preimage, "reason": new.reason, "owner": new.owner}
        if expected is None:  # the unique key lets one of two racing inserts through
            return await self._rowcount(_INSERT_REFUND, params) == 1
        params.update(old_status=expected.status.value, old_attempt=expected.attempt,
                      old_hash=expected.payment_hash, old_owner=expected.owner)
        return await self._rowcount(_UPDATE_REFUND, params) == 1

    async def refunds_in_flight(self, limit: int = 100) -> list[bytes]:
        rows = await self._fetchall(
            "SELECT allowance_id FROM refunds WHERE status = 'in_flight' LIMIT %s", (limit,))
        return [bytes(row[0]) for row in rows]

    async def aclose(self) -> None:
        await self._pool.aclose()


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: PostgresAllowanceStore) -> AllowanceStore:
        return store
