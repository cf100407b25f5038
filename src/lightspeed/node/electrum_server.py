"""The Electrum server over TCP: newline-delimited JSON-RPC to :class:`ElectrumSession`, and notifications.

Only I/O lives here (the protocol is :mod:`lightspeed.chain.electrum`). The chain file is
written by other processes too (daemons, ``lightspeed chain mine``), so a follower polls its
tip and last transaction every ``poll_interval_s`` (one indexed query when nothing moved)
and hands what changed to every session, which says whom to notify. A request that meets
the file locked by another process (ChainBusy) is retried after a pause, up to
``busy_retry_s``, never blocking the event loop longer than the chain's busy timeout.
A line longer than :data:`MAX_LINE_BYTES` gets an error and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

from lightspeed.chain.electrum import ChainFollower, ElectrumSession
from lightspeed.chain.electrum_rpc import (
    DAEMON_ERROR,
    INVALID_REQUEST,
    MAX_LINE_BYTES,
    Request,
    RpcError,
    encode,
    error_message,
    parse_line,
)
from lightspeed.chain.regtest import RegtestChain
from lightspeed.errors import ChainBusy
from lightspeed.tasks import cancel_and_wait

log = logging.getLogger("lightspeed.electrum")

MAX_CLIENTS = 256
MAX_UNSENT_BYTES = 16 * 1024 * 1024  # a client that stops reading is dropped
WRITE_TIMEOUT_S = 30.0


class ElectrumServer:
    """Serves ``chain`` to Electrum-protocol wallets: ``await start(host, port)``, then ``await stop()``."""

    def __init__(self, chain: RegtestChain, poll_interval_s: float = 0.2, busy_retry_s: float = 10.0) -> None:
        self.chain, self.poll_interval_s, self.busy_retry_s = chain, poll_interval_s, busy_retry_s
        self.host, self.port = "127.0.0.1", 0
        self._server: asyncio.Server | None = None
        self._sessions: dict[ElectrumSession, asyncio.StreamWriter] = {}
        self._follower = ChainFollower(chain)
        self._follow_task: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE_BYTES, ssl=tls)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        self._follow_task = asyncio.create_task(self._follow())
        return self.port

    async def stop(self) -> None:
        if self._follow_task is not None:
            await cancel_and_wait(self._follow_task)
        if self._server is not None:
            self._server.close()
        for writer in list(self._sessions.values()):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # -- following the chain file ----------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                changes = self._follower.poll()
            except ChainBusy:
                continue
            if changes is None:
                continue
            for session, writer in list(self._sessions.items()):
                try:
                    messages = session.notifications(changes)
                except ChainBusy:
                    continue  # rare; the next change brings the statuses up to date
                for message in messages:
                    self._write(writer, message)

    # -- clients ---------------------------------------------------------------------------------

    def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            log.info("dropping a client that does not read its answers")
            writer.close()
            return
        writer.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._sessions) >= MAX_CLIENTS:
            writer.write(encode(error_message(None, RpcError(DAEMON_ERROR, "too many connections"))))
            writer.close()
            return
        session = ElectrumSession(self.chain, self.host, self.port)
        self._sessions[session] = writer
        try:
            while not session.close_after_reply:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    error = RpcError(INVALID_REQUEST, f"request line longer than {MAX_LINE_BYTES} bytes")
                    self._write(writer, encode(error_message(None, error)))
                    break
                except asyncio.IncompleteReadError:
                    break
                if not line.strip():
                    continue
                reply = await self._answer(session, line)
                if reply is not None:
                    self._write(writer, reply)
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.debug("client gone: %s", exc)
        finally:
            del self._sessions[session]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, session: ElectrumSession, line: bytes) -> bytes | None:
        incoming = parse_line(line)
        messages = [await self._run(session, item) for item in incoming.items]
        return session.answer(incoming, messages)

    async def _run(self, session: ElectrumSession, item: Any) -> dict[str, Any] | None:
        """One request; while the chain file is locked by another process, retried with growing pauses."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + self.busy_retry_s, 0.05
        while True:
            try:
                return session.run(item)
            except ChainBusy as exc:
                if loop.time() + pause > deadline:
                    if isinstance(item, Request) and not item.notification:
                        return error_message(item.id, RpcError(DAEMON_ERROR, str(exc)))
                    return None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)


async def serve_until_signalled(chain: RegtestChain, host: str, port: int, ready: Callable[[str], None],
                                tls: ssl.SSLContext | None = None) -> None:
    """Serve until SIGINT or SIGTERM; ``ready`` gets the "HOST:PORT:t" (":s" with TLS) server string."""
    server = ElectrumServer(chain)
    bound = await server.start(host, port, tls)
    kind = "s" if tls is not None else "t"
    ready(f"[{host}]:{bound}:{kind}" if ":" in host else f"{host}:{bound}:{kind}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
