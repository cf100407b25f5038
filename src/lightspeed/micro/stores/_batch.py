"""Batching of one kind of store call: the calls made while a batch runs go in the next one.

Profiled in process (a Starlette app behind the middleware, four concurrent clients), a paid
call's ``advance`` cost about 170 µs of the event loop's CPU with Redis (redis-py: pool
checkout, command packing, reply parsing), and with PostgreSQL psycopg's per-statement cost
plus a commit that concurrent calls on one allowance had to wait for in turn, since they all
lock its row. Sent as one Redis script run or one PostgreSQL statement, a batch pays those
once.

The batch forms by itself: the first call starts a drain task (which first runs on the next
turn of the event loop, so every call made in this turn joins), and the calls made while a
batch is in flight go in the next one. An idle store adds no delay. Calls run in the order
they were made. A caller learns its result only when the whole batch has returned (for
PostgreSQL: once its statement committed); if the batch fails, every call in it fails with
that error and none is acknowledged.

:class:`TurnPipeline` is the variant for a connection that pipelines (the lean Redis
connection): the calls of one event-loop turn form a batch that is sent at once, without
waiting for the batch before it to return.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 256  # calls in one batch (bounds a script's run, a transaction's locks)


class TurnBatcher(Generic[Item, Result]):
    """Runs ``run_batch`` on the calls queued meanwhile; one batch in flight at a time.

    ``run_batch`` returns one result per item, in order, or raises to fail them all.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
                 max_batch: int = MAX_BATCH) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (for tests and benchmarks)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._drain_task is None:
            self._drain_task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                self.batches += 1
                try:
                    results = await self._run_batch([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise AssertionError(f"{len(results)} results for {len(batch)} calls")
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # the drain task was cancelled (loop closing)
                    for _, future in batch + self._pending:
                        future.cancel()
                    self._pending.clear()
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # the caller may have been cancelled meanwhile
                        future.set_result(result)
        finally:
            self._drain_task = None


class TurnPipeline(Generic[Item, Result]):
    """The calls made in one turn of the event loop go as one batch, sent at once.

    Unlike :class:`TurnBatcher`, a batch does not wait for the one before it to return: for a
    connection that pipelines (Redis answers the commands on one connection in the order they
    came), waiting would only add a round trip. ``start_batch`` sends the batch and returns
    the future of its results (one per item, in order; or an exception failing them all); it
    is called in the order the batches formed, so the batches reach the server in order.
    """

    def __init__(self, start_batch: Callable[[Sequence[Item]], asyncio.Future[Sequence[Result]]],
                 max_batch: int = MAX_BATCH) -> None:
        self._start_batch = start_batch
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self.batches = 0  # batches sent (for tests and benchmarks)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for first in range(0, len(pending), self._max_batch):
            batch = pending[first:first + self._max_batch]
            self.batches += 1
            try:
                results = self._start_batch([item for item, _ in batch])
            except Exception as exc:  # could not even be sent
                _fail(batch, exc)
                continue
            results.add_done_callback(functools.partial(_settle, batch))


def _fail(batch: Sequence[tuple[object, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _settle(batch: Sequence[tuple[object, asyncio.Future[Any]]],
            done: asyncio.Future[Sequence[Any]]) -> None:
    """Hand each caller its result once the batch's future is done (or its error to all)."""
    if done.cancelled():
        for _, future in batch:
            future.cancel()
        return
    exc = done.exception()
    if exc is None:
        results = done.result()
        if len(results) != len(batch):
            exc = AssertionError(f"{len(results)} results for {len(batch)} calls")
    if exc is not None:
        _fail(batch, exc)
        return
    for (_, future), result in zip(batch, results, strict=True):
        if not future.done():  # the caller may have been cancelled meanwhile
            future.set_result(result)
