"""A node on an event loop of its own thread, behind a synchronous handle.

Test tools written as plain blocking code (lnprototest scripts a peer step by step, from
pytest's thread) drive the node through :class:`NodeThread`: every call that touches the
node *or its chain* runs on the node's loop (:meth:`NodeThread.call`), so the node and the
tool never use the chain's SQLite connection at the same time, and the node keeps serving
its peers over real TCP between the tool's steps. Long operations that only end when the
peer answers (opening a channel) are started with :meth:`NodeThread.submit` and not waited
for; whatever they raise is kept in :attr:`NodeThread.failures` for the tool to report.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from lightspeed.node.node import Node

T = TypeVar("T")
CALL_TIMEOUT_S = 60.0


class NodeThread:
    """Runs one :class:`Node` on a private event loop (see the module docstring)."""

    def __init__(self, name: str = "lightspeed-node") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._node: Node | None = None
        self._submitted: list[concurrent.futures.Future[Any]] = []
        self.failures: list[tuple[str, BaseException]] = []  # (what, exception) of submitted work
        self.port = 0
        self._closed = False

    @property
    def node(self) -> Node:
        if self._node is None:
            raise RuntimeError("the node is not started")
        return self._node

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the node's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run the plain function ``fn`` on the node's loop (between two of the node's steps)."""
        async def run() -> T:
            return fn()
        return self.run(run(), timeout)

    def submit(self, what: str, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Start ``coro`` without waiting; an exception it ends with goes to :attr:`failures`."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._submitted.append(future)

        def done(f: concurrent.futures.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                self.failures.append((what, f.exception()))  # type: ignore[arg-type]

        future.add_done_callback(done)
        return future

    def start(self, make: Callable[[], Node], host: str = "127.0.0.1") -> int:
        """Build the node with ``make`` on the loop's thread, start it listening; returns the port."""
        async def start() -> int:
            self._node = make()
            return await self._node.start(host, 0)
        self.port = self.run(start())
        return self.port

    def close(self) -> None:
        """Cancel submitted work, stop the node and the loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for future in self._submitted:
            future.cancel()
        if self._node is not None:
            with contextlib.suppress(Exception):
                self.run(self._node.stop(), timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._loop.close()
