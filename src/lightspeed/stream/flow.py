"""Write flow control for the stream's asyncio Protocols (:mod:`.wsserver`, :mod:`.wsclient`).

A transport calls ``pause_writing`` when its buffer passes the high-water mark; a writer that
awaits :meth:`FlowControlledProtocol.drained` then waits until ``resume_writing``, so a peer
that reads slower than we write holds us back instead of growing our buffer without bound.
"""

from __future__ import annotations

import asyncio


class FlowControlledProtocol(asyncio.Protocol):
    """An :class:`asyncio.Protocol` whose writers wait while the transport is paused."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.writable: asyncio.Future[None] | None = None  # pending while the transport is paused

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        self.release_writers()

    def release_writers(self) -> None:
        """Let every waiting writer go on (resumed, or the connection is lost: they see it)."""
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    async def drained(self) -> None:
        """Return at once unless the transport is paused; then when it resumes (or is lost)."""
        if self.writable is not None and not self.writable.done():
            await self.writable
