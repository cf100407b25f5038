"""A small asyncio WebSocket client (RFC 6455): the stream buyer's side of the connection.

Only what the buyer needs: ``ws://`` URLs, text frames, answering pings and closes. The framing
is :mod:`.wsframes` (sans-IO, shared with the seller's :mod:`.wsserver`); this module owns the
socket as an :class:`asyncio.Protocol`: a received message completes the waiting ``recv`` at
once, without a reader task, a queue or ``asyncio.wait_for`` per message (one process drives a
thousand buyers in the benchmark: the client's cost per tick matters as much as the server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from urllib.parse import urlsplit

from lightspeed.errors import UsageError
from lightspeed.stream.wsframes import (
    CLOSE,
    MAX_HANDSHAKE,
    PONG,
    TEXT,
    FrameReader,
    WsProtocolError,
    accept_key,
    client_key,
    close_payload,
    frame,
    parse_head,
)


class ConnectionClosed(ConnectionError):
    """The WebSocket is closed (by either side, or the TCP connection dropped)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, key: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.reader: FrameReader | None = None  # set once the server accepted
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.handshake.add_done_callback(_retrieved)  # connect() may have given up on it already
        self.messages: deque[str] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.gone = False  # no more messages will come
        self.close_sent = False
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.reader is None:
            self._handshake(data)
            return
        try:
            events = self.reader.feed(data)
        except WsProtocolError as exc:  # a protocol violation by the server: the connection is unusable
            self._send_close(exc.code, exc.reason)
            self._end()
            return
        for kind, payload in events:
            if kind == "text":
                self.messages.append(payload)  # type: ignore[arg-type]
            elif kind == "ping":
                self.write(frame(PONG, payload, mask=True))  # type: ignore[arg-type]
            elif kind == "close":
                self._send_close(1000)
                self._end()
                break
            # binary frames are not part of the protocol; pongs answer nothing we sent
        self._wake()

    def _handshake(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HANDSHAKE:
                self._fail_handshake("the handshake's answer is too long")
            return
        head, rest = self.head[:end], self.head[end + 4:]
        try:
            start, headers = parse_head(head)
            status = start.split(" ", 2)[1]
        except (ValueError, IndexError):
            self._fail_handshake("the handshake's answer is not HTTP")
            return
        if status != "101":
            self._fail_handshake(f"the server refused the WebSocket (HTTP {status})")
            return
        if headers.get("sec-websocket-accept") != accept_key(self.key):
            self._fail_handshake("the server's Sec-WebSocket-Accept does not answer our key")
            return
        self.reader = FrameReader(masked=False)
        if not self.handshake.done():
            self.handshake.set_result(None)
        if rest:
            self.data_received(rest)

    def _fail_handshake(self, reason: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionClosed(reason))
        self.reader = FrameReader(masked=False)
        self._end()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionClosed("the server closed the connection during the handshake"))
        self.gone = True
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send_close(self, code: int, reason: str = "") -> None:
        if not self.close_sent:
            self.close_sent = True
            self.write(frame(CLOSE, close_payload(code, reason), mask=True))

    def _end(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class WebSocket:
    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol

    @property
    def closed(self) -> bool:
        return self._p.gone or self._p.close_sent

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0) -> WebSocket:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise UsageError(f"url: expected ws://HOST:PORT/PATH, got {url!r}")
        port = parts.port or 80
        loop = asyncio.get_running_loop()
        key = client_key()
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(key), parts.hostname, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionClosed(f"cannot connect to {parts.hostname}:{port}: {exc}") from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a tick is one small frame
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        protocol.write((f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode("latin-1"))
        try:
            await asyncio.wait_for(asyncio.shield(protocol.handshake), timeout)
        except TimeoutError:
            transport.abort()
            raise ConnectionClosed(f"{url}: no answer to the WebSocket handshake in {timeout} s") from None
        except ConnectionClosed as exc:
            transport.abort()
            raise ConnectionClosed(f"{url}: {exc}") from None
        return cls(protocol)

    async def send(self, text: str) -> None:
        p = self._p
        if self.closed or p.transport is None or p.transport.is_closing():
            raise ConnectionClosed("the WebSocket is closed")
        p.transport.write(frame(TEXT, text.encode("utf-8"), mask=True))
        if p.writable is not None and not p.writable.done():
            await p.writable
            if p.gone:
                raise ConnectionClosed("the WebSocket is closed")

    async def recv(self, timeout: float | None = None) -> str:
        p = self._p
        if not p.messages:
            if p.gone:
                raise ConnectionClosed("the server closed the WebSocket")
            waiter = p.waiter = p.loop.create_future()
            timer = p.loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                p.waiter = None
                if timer is not None:
                    timer.cancel()
            if not p.messages:
                if p.gone:
                    raise ConnectionClosed("the server closed the WebSocket")
                raise TimeoutError("no message from the server in time")
        return p.messages.popleft()

    async def close(self) -> None:
        p = self._p
        if not p.gone:
            p._send_close(1000)
            p.gone = True
        if p.transport is not None:
            p.transport.close()
        p._wake()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (what a crash or a cut cable does)."""
        self._p.gone = True
        if self._p.transport is not None:
            self._p.transport.abort()


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved: no "exception was never retrieved" at exit


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
