"""Stream state on PostgreSQL (psycopg 3, async): the seller's processes share one view.

Every operation is one statement in autocommit mode: the conditions (``epoch``, no statement
yet) are in the ``WHERE`` of the ``UPDATE`` itself, which PostgreSQL evaluates on the newest row
version under a row lock (READ COMMITTED re-checks a row a concurrent update changed), so two
processes racing on one stream: exactly one write wins. A few connections are pooled as in
:mod:`lightspeed.micro.stores.postgres`; a reused connection found dead is replaced and the
statement run once more, which is safe: a repeated conditional update finds its condition gone
(or, for ``deliver``, raises the count to the same value).

A closed stream is kept ``closed_retention`` seconds (for a late resume, which gets its
statement): ``close`` stamps ``closed_at`` (the server's clock, so every process agrees) and
:meth:`PostgresStreamStore.purge_closed`, run by the seller's sweep every few minutes, deletes a
bounded number of the streams closed before the cutoff. Rows closed by an earlier version (no
``closed_at``) are stamped when the schema is checked at start, and so expire a retention later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from lightspeed.micro.store import StoreError
from lightspeed.micro.stores._pg_pool import Connection, PgPool
from lightspeed.stream.state import (
    CLOSED_RETENTION,
    MAX_SELLERS,
    PURGE_LIMIT,
    StreamRecord,
    StreamStore,
    StreamStoreUnavailable,
    check_announce,
    check_record,
    check_retention,
)

_SCHEMA_LOCK = 0x4C53_5354  # advisory lock key ("LSST") serializing schema creation
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS streams (
        id bytea PRIMARY KEY,
        allowance_id bytea NOT NULL,
        lane integer NOT NULL,
        start_index bigint NOT NULL,
        start_link bytea NOT NULL,
        tariff text NOT NULL,
        resume_key bytea NOT NULL,
        epoch bigint NOT NULL,
        delivered_units bigint NOT NULL,
        statement text NOT NULL)""",
    "ALTER TABLE streams ADD COLUMN IF NOT EXISTS closed_at double precision",
    "CREATE INDEX IF NOT EXISTS streams_closed_at ON streams (closed_at) WHERE closed_at IS NOT NULL",
    # closed by an earlier version without a closed_at: empty once stamped, so cheap at every start
    "CREATE INDEX IF NOT EXISTS streams_unstamped ON streams (id) WHERE closed_at IS NULL AND statement <> ''",
    "UPDATE streams SET closed_at = extract(epoch from now()) WHERE closed_at IS NULL AND statement <> ''",
    """CREATE TABLE IF NOT EXISTS stream_sellers (
        url text PRIMARY KEY,
        node_id bytea NOT NULL,
        seq bigserial)""",
)
_COLUMNS = "id, allowance_id, lane, start_index, start_link, tariff, resume_key, epoch, delivered_units, statement"

T = TypeVar("T")


class PostgresStreamStore:
    """:class:`~lightspeed.stream.state.StreamStore` on PostgreSQL (``dsn``: a libpq string); a
    closed stream is kept ``closed_retention`` seconds, then :meth:`purge_closed` deletes it."""

    def __init__(self, dsn: str, pool_size: int = 4, closed_retention: float = CLOSED_RETENTION) -> None:
        check_retention(closed_retention)
        self._retention = closed_retention
        self._pool = PgPool(dsn, pool_size, _SCHEMA, _SCHEMA_LOCK)
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        self._name = f"stream store postgresql {info.get('host', '')}:{info.get('port', 5432)}"

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        try:
            return await self._pool.run(work)
        except psycopg.OperationalError as exc:
            raise StreamStoreUnavailable(self._name, str(exc).strip().splitlines()[0] if str(exc).strip()
                                         else type(exc).__name__) from None

    async def _fetchall(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        async def work(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query, params)
            rows: list[tuple[Any, ...]] = await cursor.fetchall() if cursor.description else []
            return rows

        return await self._run(work)

    async def _rowcount(self, query: str, params: Any) -> int:
        async def work(conn: Connection) -> int:
            return (await conn.execute(query, params)).rowcount

        return await self._run(work)

    async def create(self, record: StreamRecord) -> None:
        check_record(record)
        r = record
        try:
            await self._rowcount(f"INSERT INTO streams ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0, '')",
                                 (r.stream_id, r.allowance_id, r.lane, r.start_index, r.start_link, r.tariff,
                                  r.resume_key))
        except psycopg.errors.UniqueViolation:
            raise StoreError(f"stream_id: {r.stream_id.hex()} already exists") from None

    async def load(self, stream_id: bytes) -> StreamRecord | None:
        rows = await self._fetchall(f"SELECT {_COLUMNS} FROM streams WHERE id = %s", (stream_id,))
        if not rows:
            return None
        sid, allowance_id, lane, start_index, start_link, tariff, key, epoch, delivered, statement = rows[0]
        return StreamRecord(bytes(sid), bytes(allowance_id), lane, start_index, bytes(start_link), tariff,
                            bytes(key), epoch, delivered, statement)

    async def take_over(self, stream_id: bytes, epoch: int) -> bool:
        return await self._rowcount(
            "UPDATE streams SET epoch = epoch + 1 WHERE id = %s AND epoch = %s AND statement = ''",
            (stream_id, epoch)) == 1

    async def deliver(self, stream_id: bytes, epoch: int, delivered_units: int) -> bool:
        return await self._rowcount(
            "UPDATE streams SET delivered_units = greatest(delivered_units, %s) "
            "WHERE id = %s AND epoch = %s AND statement = ''", (delivered_units, stream_id, epoch)) == 1

    async def close(self, stream_id: bytes, epoch: int, statement: str) -> str:
        rows = await self._fetchall(
            "WITH c AS (UPDATE streams SET statement = %s, closed_at = extract(epoch from now()) "
            "WHERE id = %s AND epoch = %s AND statement = '' "
            "RETURNING statement) "
            "SELECT statement FROM c UNION ALL SELECT statement FROM streams WHERE id = %s "
            "AND NOT EXISTS (SELECT 1 FROM c)", (statement, stream_id, epoch, stream_id))
        return str(rows[0][0]) if rows else ""

    async def purge_closed(self, limit: int = PURGE_LIMIT) -> int:
        # SKIP LOCKED: processes purging at once share the work instead of waiting on each other
        return await self._rowcount(
            "DELETE FROM streams WHERE id IN (SELECT id FROM streams WHERE closed_at < extract(epoch from now()) - %s "
            "ORDER BY closed_at LIMIT %s FOR UPDATE SKIP LOCKED)", (self._retention, limit))

    async def announce(self, url: str, node_id: bytes) -> None:
        check_announce(url, node_id)
        await self._rowcount("INSERT INTO stream_sellers (url, node_id) VALUES (%s, %s) "
                             "ON CONFLICT (url) DO UPDATE SET node_id = excluded.node_id", (url, node_id))

    async def sellers(self) -> list[tuple[str, bytes]]:
        rows = await self._fetchall("SELECT url, node_id FROM stream_sellers ORDER BY seq LIMIT %s",
                                    (MAX_SELLERS,))
        return [(str(url), bytes(node_id)) for url, node_id in rows]

    async def aclose(self) -> None:
        await self._pool.aclose()


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: PostgresStreamStore) -> StreamStore:
        return store
