"""A small pool of psycopg connections (psycopg_pool is not a dependency), shared by the
PostgreSQL allowance store and the PostgreSQL stream store.

Connections are opened on demand up to ``size`` (autocommit), the schema is created once per
process under an advisory lock (so several processes starting together do not race), and a
reused connection found dead runs the work once more on a new one. Each store says why running
its statements twice is safe (every one of them is conditional and fails closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg

from lightspeed.errors import UsageError

Connection = psycopg.AsyncConnection[Any]
T = TypeVar("T")


class PgPool:
    """Up to ``size`` connections to ``dsn``; ``schema`` runs once, under advisory lock ``schema_lock``."""

    def __init__(self, dsn: str, size: int, schema: Sequence[str], schema_lock: int) -> None:
        if size < 1:
            raise UsageError(f"pool_size: must be at least 1, got {size}")
        self.dsn, self.size = dsn, size
        self._schema, self._schema_key = tuple(schema), schema_lock
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        self._opened = 0
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._closed = False

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection; once more on a new one if a reused one was dead
        (a connection that sat idle may have been closed by the server: restart, failover, timeout)."""
        for attempt in range(2):
            async with self._connection() as (conn, reused):
                try:
                    return await work(conn)
                except psycopg.OperationalError:
                    if attempt or not reused or not conn.broken:
                        raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[tuple[Connection, bool]]:
        """Borrow a connection (and whether it was reused): an idle one, a new one below ``size``,
        or the next one returned."""
        if self._closed:
            raise UsageError("the store is closed")
        reused = not (self._idle.empty() and self._opened < self.size)
        if reused:
            conn = await self._idle.get()
        else:
            self._opened += 1
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                await self._ensure_schema(conn)
            except BaseException:
                self._opened -= 1
                raise
        try:
            yield conn, reused
        finally:
            if conn.broken or conn.closed or self._closed:
                self._opened -= 1
                await conn.close()
            else:
                self._idle.put_nowait(conn)

    async def _ensure_schema(self, conn: Connection) -> None:
        async with self._schema_lock:
            if self._schema_ready:
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._schema_key,))
                for statement in self._schema:
                    await conn.execute(statement)
            self._schema_ready = True

    async def aclose(self) -> None:
        self._closed = True
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            self._opened -= 1
            await conn.close()
