"""A WebSocket-only asyncio server for ASGI WebSocket apps: the fast path of metered streams.

Why: at 1,000 streams of 10 ticks/s a server handles 20,000 frames a second, and under uvicorn
(ASGI over wsproto, or over the ``websockets`` library's own asyncio layer) the server's layers
above the WebSocket protocol (a task, queue and lock per message, the ASGI adapter) cost more CPU
than everything a tick does (profiled: 65-95 µs per echoed message with wsproto under uvicorn).
Here one :class:`asyncio.Protocol` per connection feeds bytes to the ``websockets`` library's
sans-IO :class:`~websockets.server.ServerProtocol` (the handshake, framing, masking, ping/pong,
the closing handshake, the size limit: RFC 6455 is not our protocol, so we don't hand-write it)
and hands messages to the app with no task, queue or lock per message.

One frame shape is read and written here instead of by the library: a whole text frame of up
to 125 bytes (every tick's ``pay`` in, every ``delivered`` out; a written one up to 64 KiB).
The library's parser and serializer took ~3.7 µs of such a frame pair, this ~0.8
(``_own_frames``). Every other frame (binary, fragmented, control, long, or anything
malformed) goes to the library whole, so its parser always starts at a frame's first byte and
keeps its checks and its state (a close, a ping, a fragmented message). Our framing starts only
when nothing past the opening request has reached the library (a client must wait for the
``101`` before it sends frames; one that did not is served by the library alone).

It speaks the ASGI WebSocket interface (``websocket.connect/receive/disconnect`` in,
``websocket.accept/send/close`` out), so :class:`~lightspeed.stream.asgi.StreamMiddleware` and
:class:`~lightspeed.stream.asgi.StreamSeller` run on it unchanged, and unchanged under uvicorn
for applications that mount them in their own ASGI app. It serves WebSockets only: a plain
HTTP request is answered ``426`` (the seller's other routes stay on its HTTP server, another
port); every refusal's body is the project's ``{"error": {"field", "reason"}}``. Not supported:
extensions (permessage-deflate is not negotiated), TLS (put a proxy in front, as for uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.exceptions import (
    HeaderLineTooLong,
    InvalidHeader,
    InvalidMethod,
    InvalidUpgrade,
    ProtocolError,
    TooManyHeaders,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import StatusLike

from lightspeed.stream.flow import FlowControlledProtocol

try:  # the library's C unmasking, as its own parser uses it (a pure Python one where it is not built)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without the library's wheel
    from websockets.utils import apply_mask

Message = dict[str, Any]
MAX_MESSAGE = 64 * 1024  # the longest message (all its fragments) a peer may send: a tick's is ~100 bytes
INBOX_HIGH = 64  # messages queued for a slow app before we stop reading the socket
CLOSE_GRACE = 1.0  # seconds to wait for the peer's close frame after ours
HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to send its whole opening request

# The library logs "connection open/closed" at INFO for every connection: at a thousand streams
# that is noise in a seller's log. Its warnings and errors still come through.
_LIBRARY_LOG = logging.getLogger(__name__ + ".protocol")
_LIBRARY_LOG.setLevel(logging.WARNING)

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_FIN_TEXT = 0x81  # a frame's first byte: FIN, no RSV bit, opcode 1 (text)
_MASKED = 0x80  # the second byte's mask bit: every client frame has it (RFC 6455 5.1)
_SHORT_HEADS = tuple(bytes((_FIN_TEXT, size)) for size in range(126))  # a server's text frame header, 0-125 bytes


def refusal(status: StatusLike, field_name: str, reason: str) -> Response:
    """An HTTP answer refusing the handshake, with the project's JSON error body."""
    status = http.HTTPStatus(status)
    body = json.dumps({"error": {"field": field_name, "reason": reason}}).encode()
    headers = Headers([("Connection", "close"), ("Content-Length", str(len(body))),
                       ("Content-Type", "application/json")])
    return Response(status.value, status.phrase, headers, body)


def _field_and_reason(exc: Exception | None, text: str) -> tuple[str, str]:
    """Which part of the request the library refused, and why, from its exception."""
    if isinstance(exc, InvalidUpgrade):
        return "upgrade", f"this server serves WebSockets only: {exc}"
    if isinstance(exc, InvalidHeader):
        return exc.name.lower(), str(exc)
    if isinstance(exc, InvalidMethod):
        return "method", str(exc)
    if isinstance(exc, (HeaderLineTooLong, TooManyHeaders)):
        return "headers", str(exc)
    return "request", str(exc) if exc is not None else text.strip()


class _ServerProtocol(ServerProtocol):
    """The library's server side; only its refusals change, to the JSON errors our API answers."""

    def reject(self, status: StatusLike, text: str) -> Response:
        return refusal(status, *_field_and_reason(self.handshake_exc, text))


class _Connection(FlowControlledProtocol):
    """One TCP connection: bytes to the library, its frames to ASGI messages, the app's back."""

    def __init__(self, server: WsServerState) -> None:
        super().__init__()
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.ws = _ServerProtocol(max_size=MAX_MESSAGE, logger=_LIBRARY_LOG)
        self.response: Response | None = None  # the 101 the library prepared, sent when the app accepts
        self.parts: list[bytes] = []  # the fragments of a message being received
        self.kind = _TEXT  # the opcode of that message
        self.inbox: deque[Message] = deque()
        self.waiter: asyncio.Future[Message] | None = None  # the app's receive() waiting for a message
        self.connected_sent = False
        self.accepted = False
        self.gone: int | None = None  # the close code once the connection is over
        self.paused_reading = False
        self.task: asyncio.Task[None] | None = None
        self.closer: asyncio.TimerHandle | None = None
        # our framing of short text frames (module docstring): on once the opening request ended
        # exactly where the bytes received so far end; off for good once the library has bytes past it
        self.own_framing = False
        self.received = 0  # bytes received before the opening request was complete
        self.request_end: int | None = None  # where in them the request's blank line ends
        self.tail = b""  # their last 3 bytes: a blank line may span two reads
        self.pending = bytearray()  # the start of a frame not yet whole (our framing)

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a tick is one small frame
        self.server.connections.add(self)
        self.closer = self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_late)

    def _handshake_late(self) -> None:
        if self.response is None and not self.accepted and self.transport is not None:
            self.transport.abort()  # a peer that connects and never finishes its request

    def data_received(self, data: bytes) -> None:
        if self.own_framing:
            if self.ws.state is OPEN:
                self._own_frames(data)
                self._after_reading()
                return
            self.own_framing = False  # closing: the library takes every byte from here on
            if self.pending:
                data, self.pending = bytes(self.pending) + data, bytearray()
        elif self.request_end is None and self.response is None:
            self._note_opening(data)
        self._library(data)
        self._after_reading()

    def _note_opening(self, data: bytes) -> None:
        """Where the opening request's blank line ends in the bytes received (HTTP/1.1 lines end in
        CRLF, which the library requires): our framing may start only if nothing follows it."""
        window = self.tail + data
        blank = window.find(b"\r\n\r\n")
        if blank >= 0:
            self.request_end = self.received - len(self.tail) + blank + 4
        self.received += len(data)
        self.tail = window[-3:]

    def _library(self, data: bytes | bytearray) -> None:
        """Bytes through the library's parser; its events to the app (and its answers to the peer)."""
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _TEXT or opcode is _BINARY:
                    if event.fin:
                        if not self._deliver(opcode, event.data):
                            break
                    else:
                        self.kind, self.parts = opcode, [bytes(event.data)]
                elif opcode is _CONT:
                    self.parts.append(bytes(event.data))
                    if event.fin:
                        whole, self.parts = b"".join(self.parts), []
                        if not self._deliver(self.kind, whole):
                            break
                # pings are answered, closes echoed and pongs ignored by the library itself
            elif isinstance(event, Request):
                self._request(event)
        # pongs, the echo of a close, a refusal, a failure's close frame; after the messages that
        # came before a close are in the inbox (flushed first, the close's end of stream woke the
        # app's receive with the disconnect, and a message read with the close was lost)
        self._flush()

    def _own_frames(self, data: bytes) -> None:
        """Read the frames in ``data``: whole short text frames here, every other frame whole through
        the library; the start of a frame not yet whole waits in ``pending`` (at most one frame:
        the library refuses a longer one from its header)."""
        if self.pending:
            self.pending += data
            buf: bytes | bytearray = self.pending
        else:
            buf = data
        end_of_data, pos = len(buf), 0
        while end_of_data - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            size = second & 0x7F
            if first == _FIN_TEXT and second & _MASKED and size < 126 and not self.parts:
                end = pos + 6 + size
                if end > end_of_data:
                    break
                if not self._deliver(_TEXT, apply_mask(buf[pos + 6:end], buf[pos + 2:pos + 6])):
                    pos = end_of_data  # not UTF-8: the library has failed the connection; the rest is dropped
                    self.own_framing = False
                    break
                pos = end
                continue
            head = 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if second & _MASKED else 0)
            if end_of_data - pos < head:
                break
            if size >= 126:
                size = int.from_bytes(buf[pos + 2:pos + (4 if size == 126 else 10)], "big")
            if size > MAX_MESSAGE:  # too long: the library refuses it from its header (1009) and has the rest
                self.own_framing = False
                self._library(buf[pos:])
                pos = end_of_data
                break
            end = pos + head + size
            if end > end_of_data:
                break
            self._library(buf[pos:end])
            pos = end
            if self.ws.state is not OPEN:  # a close, or a frame the library refused: it has the rest
                self.own_framing = False
                if pos < end_of_data:
                    self._library(buf[pos:])
                pos = end_of_data
                break
        if buf is self.pending:
            del self.pending[:pos]
        elif pos < end_of_data:
            self.pending = bytearray(buf[pos:])

    def _after_reading(self) -> None:
        if len(self.inbox) > INBOX_HIGH and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def _deliver(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> bool:
        if opcode is _BINARY:
            self.inbox.append({"type": "websocket.receive", "bytes": bytes(data)})
            return True
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            self.ws.fail(1007, "a text message that is not UTF-8")
            self._flush()
            return False
        self.inbox.append({"type": "websocket.receive", "text": text})
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._over(1006)
        self.server.connections.discard(self)
        if self.closer is not None:
            self.closer.cancel()
        self.release_writers()

    # -- the handshake -------------------------------------------------------------------

    def _request(self, request: Request) -> None:
        """The opening request is complete: the library checks it; the app decides (accept or not)."""
        assert self.transport is not None
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        response = self.ws.accept(request)
        if response.status_code != 101:  # not a valid WebSocket request: the library's status, our body
            self.ws.send_response(response)
            self._flush()
            return
        self.response = response
        # the library has no byte past the request: it waits at a frame's start (our framing may
        # begin once the app accepts)
        self.own_framing = self.request_end is not None and self.request_end == self.received
        path, _, query = request.path.partition("?")
        sock = self.transport.get_extra_info("sockname")
        peer = self.transport.get_extra_info("peername")
        protocols = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
        scope = {
            "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "scheme": "ws", "path": unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "",
            "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in request.headers.raw_items()],
            "client": tuple(peer[:2]) if peer else None, "server": tuple(sock[:2]) if sock else None,
            "subprotocols": [p.strip() for p in protocols.split(",") if p.strip()],
            "state": {},
        }
        self.task = self.loop.create_task(self._run(scope))

    def _refuse(self, status: int, field_name: str, reason: str) -> None:
        """The app refused before accepting: an HTTP answer instead of the 101."""
        if self.gone is None and not self.accepted:
            self.ws.send_response(refusal(status, field_name, reason))
            self._flush()
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
            if not self.accepted:
                self._refuse(500, "app", "closed without accepting")
            else:
                self._close(code, "")

    def receive(self) -> asyncio.Future[Message]:
        """ASGI's ``receive``: a future of the next message, set now if one is here (awaiting a
        done future does not suspend), else when one arrives. A future, not a coroutine: one
        frame less to resume for every message (every tick of a stream is one)."""
        future: asyncio.Future[Message] = self.loop.create_future()
        if not self.connected_sent:
            self.connected_sent = True
            future.set_result({"type": "websocket.connect"})
        elif self.inbox:
            future.set_result(self._next())
        elif self.gone is not None:
            future.set_result({"type": "websocket.disconnect", "code": self.gone})
        else:
            self.waiter = future
        return future

    def _next(self) -> Message:
        message = self.inbox.popleft()
        if self.paused_reading and len(self.inbox) < INBOX_HIGH // 2 and self.transport is not None:
            self.paused_reading = False
            self.transport.resume_reading()
        return message

    def send_text_now(self, text: str) -> asyncio.Future[None] | None:
        """Write a text message at once: the fast path of :class:`~lightspeed.stream.asgi.StreamSeller`
        (no ASGI message, no lock: the frame is in the transport's buffer when this returns, so
        frames from two writers never interleave). Returns the future to await while the peer reads
        slower than we write (None: go on); nothing is written once the connection is closing."""
        ws = self.ws
        if not self.accepted or ws.state is not OPEN or self.gone is not None:
            return None
        self._write_text(text)
        writable = self.writable
        return writable if writable is not None and not writable.done() else None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            ws = self.ws
            if ws.state is not OPEN or self.gone is not None:
                return  # closing or gone: the app learns it from receive()
            text = message.get("text")
            if text is not None:
                self._write_text(text)
            else:
                ws.send_binary(message.get("bytes") or b"")
                self._flush()
            await self.drained()  # the peer reads slower than we write: wait for it
        elif kind == "websocket.accept":
            if self.accepted or self.gone is not None or self.response is None:
                return
            self.accepted = True
            subprotocol = message.get("subprotocol")
            if subprotocol:
                self.response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.ws.send_response(self.response)
            self._flush()
        elif kind == "websocket.close":
            if not self.accepted:
                self._refuse(403, "path", "no WebSocket is served here")
                return
            self._close(int(message.get("code", 1000)), str(message.get("reason") or ""))
        else:
            raise RuntimeError(f"ASGI message type {kind!r} is not a WebSocket message")

    # -- helpers -------------------------------------------------------------------------

    def _write_text(self, text: str) -> None:
        """One text frame (the connection is open): up to 64 KiB framed here, longer by the library.
        The library's buffer is empty here (every call into it is flushed), so frames stay in order."""
        data = text.encode("utf-8")
        size = len(data)
        if size > 0xFFFF:
            self.ws.send_text(data)
            self._flush()
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            head = _SHORT_HEADS[size] if size < 126 else b"\x81\x7e" + size.to_bytes(2, "big")
            transport.write(head + data)

    def _flush(self) -> None:
        """Write what the library produced; its end-of-stream marker (``b""``) closes the connection."""
        transport = self.transport
        for data in self.ws.data_to_send():
            if data:
                if transport is not None and not transport.is_closing():
                    transport.write(data)
            else:
                ws = self.ws
                closed = ws.close_rcvd or ws.close_sent
                self._over(closed.code if closed is not None else 1006)
                if transport is not None:
                    transport.close()  # after what is buffered is written

    def _wake(self) -> None:
        """Hand the waiting ``receive`` its message, or the disconnect once nothing is left (a wait
        the app cancelled is dropped: its message stays first in the inbox)."""
        waiter = self.waiter
        if waiter is None:
            return
        if waiter.done():
            self.waiter = None
        elif self.inbox:
            self.waiter = None
            waiter.set_result(self._next())
        elif self.gone is not None:
            self.waiter = None
            waiter.set_result({"type": "websocket.disconnect", "code": self.gone})

    def _over(self, code: int) -> None:
        if self.gone is None:
            self.gone = code
        self._wake()

    def _close(self, code: int, reason: str) -> None:
        """Send our close frame; the TCP connection closes on the peer's answer, or after a grace time."""
        if self.ws.state is not OPEN or self.gone is not None:
            return
        reason = reason.encode("utf-8")[:120].decode("utf-8", "ignore")  # a control frame: 125 bytes
        try:
            self.ws.send_close(code, reason)
        except ProtocolError:  # a code RFC 6455 does not let an endpoint send: the app's mistake
            self.ws.send_close(1011, "")
        self._flush()
        if self.transport is not None:
            self.closer = self.loop.call_later(CLOSE_GRACE, self.transport.close)

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
