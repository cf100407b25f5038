"""Stopping an asyncio task without swallowing the caller's own cancellation.

The usual idiom, ``task.cancel()`` then ``await task`` under ``suppress(CancelledError)``,
cannot tell the child's CancelledError from one aimed at the caller: when the caller is
cancelled while it waits, the cancel is swallowed and the caller runs on. A loop that does
this (a redial loop waiting for its connection to close, say) outlives a shutdown, and
``asyncio.run`` then waits for it without limit: a daemon that never exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_ended(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` is done, however it ends; a cancel of the caller still propagates."""
    if not task.done():
        await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # seen: its failure is the task's own business, reported where it ran


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (see the module docstring)."""
    task.cancel()
    await wait_ended(task)
