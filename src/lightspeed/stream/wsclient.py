"""A small asyncio WebSocket client (RFC 6455): the stream buyer's side of the connection.

Only what the buyer needs: ``ws://`` URLs and text messages. The protocol (handshake, masking,
framing, ping/pong, close) is the ``websockets`` library's sans-IO
:class:`~websockets.client.ClientProtocol`; this module owns the socket as an
:class:`asyncio.Protocol`: a received message completes the waiting ``recv`` at once, without a
reader task, a queue or ``asyncio.wait_for`` per message (one process drives a thousand buyers in
the benchmark: the client's cost per tick matters as much as the server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from typing import cast
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from lightspeed.errors import UsageError
from lightspeed.stream.flow import FlowControlledProtocol

MAX_MESSAGE = 64 * 1024  # the longest message the server may send us
CLOSE_GRACE = 1.0  # seconds we wait for the server to end the TCP connection after a close

_LIBRARY_LOG = logging.getLogger(__name__ + ".protocol")  # the library's per-connection INFO lines: quiet
_LIBRARY_LOG.setLevel(logging.WARNING)

_TEXT, _CONT = Opcode.TEXT, Opcode.CONT


class ConnectionClosed(ConnectionError):
    """The WebSocket is closed (by either side, or the TCP connection dropped)."""


def _refused(response: Response, exc: Exception | None) -> str:
    """Why the server refused the handshake, with its JSON error's reason when it gave one."""
    if not isinstance(exc, InvalidStatus):
        return f"the server's answer to the handshake is not a WebSocket's: {exc}"
    why = f"the server refused the WebSocket (HTTP {response.status_code})"
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        error = json.loads(bytes(response.body))["error"]
        why += f": {error['field']}: {error['reason']}"
    return why


class _Protocol(FlowControlledProtocol):
    def __init__(self, ws: ClientProtocol) -> None:
        super().__init__()
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.handshake.add_done_callback(_retrieved)  # connect() may have given up on it already
        self.messages: deque[str] = deque()
        self.parts: list[bytes] = []  # a fragmented text message being received
        self.waiter: asyncio.Future[None] | None = None
        self.gone = False  # no more messages will come
        self.closer: asyncio.TimerHandle | None = None
        #: ``recv``'s timeout: the time the waiting ``recv`` gives up, and one timer that looks at it.
        #: A timer armed and cancelled per message cost the buyer ~7 µs a tick (profiled at 1,000
        #: streams); this one is re-armed only when it fires before the deadline moved on.
        self.deadline = float("inf")
        self.watchdog: asyncio.TimerHandle | None = None

    def watch(self, timeout: float | None) -> None:
        """Give the waiting ``recv`` until ``timeout`` seconds from now (``None``: no limit)."""
        if timeout is None:
            self.deadline = float("inf")
            return
        self.deadline = self.loop.time() + timeout
        watchdog = self.watchdog
        if watchdog is None or watchdog.when() > self.deadline:  # none, or one set for a longer timeout
            if watchdog is not None:
                watchdog.cancel()
            self.watchdog = self.loop.call_at(self.deadline, self._watched)

    def _watched(self) -> None:
        self.watchdog = None
        waiter = self.waiter
        if waiter is None or waiter.done() or self.deadline == float("inf"):
            return  # nobody waits (the next recv arms it again)
        if self.loop.time() >= self.deadline:
            _expire(waiter)
        else:
            self.watchdog = self.loop.call_at(self.deadline, self._watched)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        self.flush()  # pongs, the echo of the server's close
        for event in events:
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _TEXT or (opcode is _CONT and self.parts):
                    self.parts.append(bytes(event.data))
                    if not event.fin:
                        continue
                    whole, self.parts = b"".join(self.parts), []
                    try:
                        self.messages.append(whole.decode("utf-8"))
                    except UnicodeDecodeError:
                        ws.fail(1007, "a text message that is not UTF-8")
                        self.flush()
                        break
                # binary frames are not part of the protocol; the library answers pings and closes
            elif isinstance(event, Response):
                if ws.handshake_exc is not None:
                    self._fail_handshake(_refused(event, ws.handshake_exc))
                elif not self.handshake.done():
                    self.handshake.set_result(None)
        if ws.handshake_exc is not None and not self.handshake.done():  # not HTTP at all
            self._fail_handshake(f"the server's answer to the handshake is not HTTP: {ws.handshake_exc}")
        if ws.state is not OPEN and self.handshake.done():  # closed, or a protocol error by the server
            self._end()
        self._wake()

    def _fail_handshake(self, reason: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionClosed(reason))
        self.gone = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionClosed("the server closed the connection during the handshake"))
        self.gone = True
        if self.closer is not None:
            self.closer.cancel()
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.release_writers()
        self._wake()

    def flush(self) -> None:
        """Write what the library produced; its end-of-stream marker (``b""``) closes the connection."""
        transport = self.transport
        for data in self.ws.data_to_send():
            if transport is None or transport.is_closing():
                continue
            if data:
                transport.write(data)
            else:
                transport.close()

    def _end(self) -> None:
        """No more messages: the server waits for nothing more from us; the TCP connection ends
        when the server closes it (RFC 6455: the server closes first) or after a grace time."""
        self.gone = True
        if self.closer is None and self.transport is not None and not self.transport.is_closing():
            self.closer = self.loop.call_later(CLOSE_GRACE, self.transport.close)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class WebSocket:
    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol

    @property
    def closed(self) -> bool:
        return self._p.gone or self._p.ws.state is not OPEN

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0) -> WebSocket:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise UsageError(f"url: expected ws://HOST:PORT/PATH, got {url!r}")
        try:
            uri = parse_uri(url)
        except (InvalidURI, ValueError) as exc:  # ValueError: a port that is not a number
            raise UsageError(f"url: {exc}") from None
        loop = asyncio.get_running_loop()
        ws = ClientProtocol(uri, max_size=MAX_MESSAGE, logger=_LIBRARY_LOG)
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(ws), uri.host, uri.port), timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionClosed(f"cannot connect to {uri.host}:{uri.port}: {exc}") from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a tick is one small frame
        ws.send_request(ws.connect())
        protocol.flush()
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
        p.ws.send_text(text.encode("utf-8"))
        p.flush()
        if p.writable is not None and not p.writable.done():
            await p.drained()
            if p.gone:
                raise ConnectionClosed("the WebSocket is closed")

    async def recv(self, timeout: float | None = None) -> str:
        p = self._p
        if not p.messages:
            if p.gone:
                raise ConnectionClosed("the server closed the WebSocket")
            waiter = p.waiter = p.loop.create_future()
            p.watch(timeout)
            try:
                await waiter
            finally:
                p.waiter = None
            if not p.messages:
                if p.gone:
                    raise ConnectionClosed("the server closed the WebSocket")
                raise TimeoutError("no message from the server in time")
        return p.messages.popleft()

    async def close(self) -> None:
        """Send our close frame and drop the connection (the buyer waits for nothing more)."""
        p = self._p
        if not p.gone and p.ws.state is OPEN:
            p.ws.send_close(1000)
            p.flush()
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
