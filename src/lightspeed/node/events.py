"""The node's event bus: every subscriber sees every event, in order.

``async for event in node.events():`` subscribes (the subscription ends when the loop does);
``await node.events.get()`` reads the default subscription that exists from the start, so an
event published before anyone listened is not lost for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class EventBus(Generic[T]):
    def __init__(self) -> None:
        self._default: asyncio.Queue[T] = asyncio.Queue()
        self._subscribers: list[asyncio.Queue[T]] = []

    def put_nowait(self, event: T) -> None:
        self._default.put_nowait(event)
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def put(self, event: T) -> None:
        self.put_nowait(event)

    async def get(self) -> T:
        return await self._default.get()

    def get_nowait(self) -> T:
        return self._default.get_nowait()

    def empty(self) -> bool:
        return self._default.empty()

    def __call__(self) -> AsyncIterator[T]:
        """A new subscription: the events published from now on."""
        queue: asyncio.Queue[T] = asyncio.Queue()
        self._subscribers.append(queue)
        return self._stream(queue)

    async def _stream(self, queue: asyncio.Queue[T]) -> AsyncIterator[T]:
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)
