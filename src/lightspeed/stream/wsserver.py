"""A WebSocket-only asyncio server for ASGI WebSocket apps: the fast path of metered streams.

Why: at 1,000 streams of 10 ticks/s a server handles 20,000 frames a second, and under uvicorn
(ASGI over wsproto, or over the ``websockets`` library) the WebSocket layer cost more CPU than
everything a tick does (profiled: 65-95 µs per echoed message with wsproto, 38-60 µs with
``websockets`` under uvicorn). Here one :class:`asyncio.Protocol` per connection parses frames
with :mod:`.wsframes` and hands messages to the app with no task, queue or lock per message.

It speaks the ASGI WebSocket interface (``websocket.connect/receive/disconnect`` in,
``websocket.accept/send/close`` out), so :class:`~lightspeed.stream.asgi.StreamMiddleware` and
:class:`~lightspeed.stream.asgi.StreamSeller` run on it unchanged, and unchanged under uvicorn
for applications that mount them in their own ASGI app. It serves WebSockets only: a plain
HTTP request is answered ``426`` (the seller's other routes stay on its HTTP server, another
port). Not supported: extensions (permessage-deflate is not negotiated), TLS (put a proxy in
front, as for uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from lightspeed.stream.wsframes import (
    BINARY,
    CLOSE,
    MAX_HANDSHAKE,
    PONG,
    TEXT,
    FrameReader,
    WsProtocolError,
    accept_key,
    check_upgrade,
    close_payload,
    frame,
    parse_head,
)

Message = dict[str, Any]
INBOX_HIGH = 64  # messages queued for a slow app before we stop reading the socket
CLOSE_GRACE = 1.0  # seconds to wait for the peer's close frame after ours
HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to send its whole opening request


def _http_error(status: str, field_name: str, reason: str) -> bytes:
    body = json.dumps({"error": {"field": field_name, "reason": reason}}).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n")
    if status.startswith("426"):
        head += "upgrade: websocket\r\nsec-websocket-version: 13\r\n"
    return (head + "\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One TCP connection: the handshake, then frames to ASGI messages and back."""

    def __init__(self, server: WsServerState) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.reader: FrameReader | None = None  # set once the handshake head is complete
        self.key = ""
        self.inbox: deque[Message] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.connected_sent = False
        self.accepted = False
        self.close_sent = False
        self.gone: int | None = None  # the close code once the connection is over
        self.paused_reading = False
        self.writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self.task: asyncio.Task[None] | None = None
        self.closer: asyncio.TimerHandle | None = None

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a tick is one small frame
        self.server.connections.add(self)
        self.closer = self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_late)

    def _handshake_late(self) -> None:
        if self.reader is None and self.transport is not None:  # a peer that connects and says nothing
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.reader is None:
            self._handshake(data)
            return
        try:
            events = self.reader.feed(data)
        except WsProtocolError as exc:
            self._fail(exc.code, exc.reason)
            return
        for kind, payload in events:
            if kind == "text":
                self.inbox.append({"type": "websocket.receive", "text": payload})
            elif kind == "binary":
                self.inbox.append({"type": "websocket.receive", "bytes": payload})
            elif kind == "ping":
                if not self.close_sent:
                    self._write(frame(PONG, payload))  # type: ignore[arg-type]
            elif kind == "close":
                code = payload[0]  # type: ignore[index]
                if not self.close_sent:
                    self.close_sent = True
                    self._write(frame(CLOSE, close_payload(1000 if code == 1005 else code)))
                self._over(code)
                assert self.transport is not None
                self.transport.close()
                break
        if len(self.inbox) > INBOX_HIGH and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._over(1006)
        self.server.connections.discard(self)
        if self.closer is not None:
            self.closer.cancel()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    # -- the handshake -------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        assert self.transport is not None
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HANDSHAKE:
                self._refuse("431 Request Header Fields Too Large", "headers", f"more than {MAX_HANDSHAKE} bytes")
            return
        head, rest = self.head[:end], self.head[end + 4:]
        self.head = b""
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        try:
            start, headers = parse_head(head)
            method, target, version = start.split(" ")
            if method != "GET" or version != "HTTP/1.1":
                raise ValueError("request: expected GET ... HTTP/1.1")
        except ValueError as exc:
            self._refuse("400 Bad Request", "request", str(exc))
            return
        try:
            self.key = check_upgrade(headers)
        except ValueError as exc:
            self._refuse("426 Upgrade Required", "upgrade", f"this server serves WebSockets only: {exc}")
            return
        path, _, query = target.partition("?")
        sock = self.transport.get_extra_info("sockname")
        peer = self.transport.get_extra_info("peername")
        scope = {
            "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "scheme": "ws", "path": unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "",
            "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
            "client": tuple(peer[:2]) if peer else None, "server": tuple(sock[:2]) if sock else None,
            "subprotocols": [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()],
            "state": {},
        }
        self.reader = FrameReader(masked=True)
        self.task = self.loop.create_task(self._run(scope))
        if rest:
            self.data_received(rest)

    def _refuse(self, status: str, field_name: str, reason: str) -> None:
        assert self.transport is not None
        self.transport.write(_http_error(status, field_name, reason))
        self.transport.close()
        self.reader = FrameReader(masked=True)  # ignore anything more
        self._over(1006)

    # -- the app's side ------------------------------------------------------------------

    async def _run(self, scope: Message) -> None:
        code = 1000
        try:
            await self.server.app(scope, self.receive, self.send)
        except Exception:
            logging.getLogger(__name__).exception("the WebSocket app failed on %s", scope["path"])
            code = 1011
        finally:
            if not self.accepted and self.gone is None:
                self._refuse("500 Internal Server Error", "app", "closed without accepting")
            elif not self.close_sent:
                self._close(code, "")

    async def receive(self) -> Message:
        if not self.connected_sent:
            self.connected_sent = True
            return {"type": "websocket.connect"}
        while not self.inbox:
            if self.gone is not None:
                return {"type": "websocket.disconnect", "code": self.gone}
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        message = self.inbox.popleft()
        if self.paused_reading and len(self.inbox) < INBOX_HIGH // 2 and self.transport is not None:
            self.paused_reading = False
            self.transport.resume_reading()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if self.close_sent or self.gone is not None:
                return  # the peer is gone: the app learns it from receive()
            text = message.get("text")
            self._write(frame(TEXT, text.encode("utf-8")) if text is not None
                        else frame(BINARY, message.get("bytes") or b""))
            if self.writable is not None and not self.writable.done():
                await self.writable  # the peer reads slower than we write
        elif kind == "websocket.accept":
            if self.accepted or self.gone is not None:
                return
            self.accepted = True
            head = ("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                    f"sec-websocket-accept: {accept_key(self.key)}\r\n")
            if message.get("subprotocol"):
                head += f"sec-websocket-protocol: {message['subprotocol']}\r\n"
            self._write((head + "\r\n").encode("latin-1"))
        elif kind == "websocket.close":
            if not self.accepted:
                if self.gone is None:
                    self._refuse("403 Forbidden", "path", "no WebSocket is served here")
                return
            self._close(int(message.get("code", 1000)), str(message.get("reason") or ""))
        else:
            raise RuntimeError(f"ASGI message type {kind!r} is not a WebSocket message")

    # -- helpers -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _over(self, code: int) -> None:
        if self.gone is None:
            self.gone = code
        self._wake()

    def _close(self, code: int, reason: str) -> None:
        """Send our close frame; the TCP connection closes on the peer's answer, or after a grace time."""
        if self.close_sent or self.gone is not None:
            return
        self.close_sent = True
        self._write(frame(CLOSE, close_payload(code, reason)))
        if self.transport is not None:
            self.closer = self.loop.call_later(CLOSE_GRACE, self.transport.close)

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol: close with ``code`` at once."""
        self._close(code, reason)
        self._over(code)
        if self.transport is not None:
            self.transport.close()

    def shut(self) -> None:
        """The server stops: close with 1001 (going away)."""
        if self.accepted:
            self._close(1001, "the server is stopping")
        self._over(1001)
        if self.transport is not None:
            self.transport.close()


@dataclass
class WsServerState:
    app: Any  # an ASGI app (only its WebSocket connections are served)
    connections: set[_Connection] = field(default_factory=set)


@dataclass
class WsOnlyServer:
    """A running :func:`serve_websockets` server."""

    url: str  # ws://host:port
    _server: asyncio.Server
    _state: WsServerState

    async def stop(self) -> None:
        self._server.close()
        tasks = [c.task for c in self._state.connections if c.task is not None]
        for connection in list(self._state.connections):
            connection.shut()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)


async def serve_websockets(app: Any, host: str = "127.0.0.1", port: int = 0, *,
                           sock: socket.socket | None = None) -> WsOnlyServer:
    """Serve ``app``'s WebSocket connections on ``host:port`` (0: a free port) until :meth:`WsOnlyServer.stop`."""
    state = WsServerState(app)
    loop = asyncio.get_running_loop()
    if sock is not None:
        server = await loop.create_server(lambda: _Connection(state), sock=sock, backlog=4096)
    else:
        server = await loop.create_server(lambda: _Connection(state), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return WsOnlyServer(f"ws://{shown}:{bound[1]}", server, state)
