"""A small asyncio WebSocket client (RFC 6455) on wsproto's sans-IO connection.

Only what the stream buyer needs: ``ws://`` URLs, text frames, answering pings and closes.
wsproto does the framing and masking; this adapter owns the socket (the same split as the
rest of Lightspeed: protocol logic without I/O, a thin asyncio layer around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from lightspeed.errors import UsageError


class ConnectionClosed(ConnectionError):
    """The WebSocket is closed (by either side, or the TCP connection dropped)."""


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: WSConnection) -> None:
        self._reader, self._writer, self._ws = reader, writer, ws
        self._messages: asyncio.Queue[str | None] = asyncio.Queue()
        self._parts: list[str] = []
        self._pump = asyncio.create_task(self._read())
        self.closed = False

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0) -> WebSocket:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise UsageError(f"url: expected ws://HOST:PORT/PATH, got {url!r}")
        port = parts.port or 80
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionClosed(f"cannot connect to {parts.hostname}:{port}: {exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a tick is one small frame
        ws = WSConnection(ConnectionType.CLIENT)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        writer.write(ws.send(Request(host=parts.netloc, target=target)))
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                writer.close()
                raise ConnectionClosed(f"{url}: the server closed the connection during the handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(reader, writer, ws)
                if isinstance(event, RejectConnection):
                    writer.close()
                    raise ConnectionClosed(f"{url}: the server refused the WebSocket (HTTP {event.status_code})")

    async def _read(self) -> None:
        try:
            data = b"-"  # frames that came in with the handshake's answer are already buffered
            while True:
                for event in self._ws.events():
                    if isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            self._messages.put_nowait("".join(self._parts))
                            self._parts.clear()
                    elif isinstance(event, Message):
                        pass  # binary frames are not part of the protocol
                    elif isinstance(event, Ping):
                        self._writer.write(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        with contextlib.suppress(Exception):
                            self._writer.write(self._ws.send(event.response()))
                        return
                if not data:
                    return
                data = await self._reader.read(65536)
                self._ws.receive_data(data or None)
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:  # a protocol violation by the server: the connection is unusable
            return
        finally:
            self.closed = True
            self._messages.put_nowait(None)
            self._writer.close()

    async def send(self, text: str) -> None:
        if self.closed:
            raise ConnectionClosed("the WebSocket is closed")
        try:
            self._writer.write(self._ws.send(Message(data=text)))
            await self._writer.drain()
        except (OSError, ConnectionError, RuntimeError) as exc:
            self.closed = True
            raise ConnectionClosed(str(exc)) from None
        except Exception as exc:  # wsproto refuses to send on a closing connection
            self.closed = True
            raise ConnectionClosed(str(exc)) from None

    async def recv(self, timeout: float | None = None) -> str:
        if self.closed and self._messages.empty():
            raise ConnectionClosed("the WebSocket is closed")
        try:
            text = await asyncio.wait_for(self._messages.get(), timeout)
        except TimeoutError:
            raise TimeoutError("no message from the server in time") from None
        if text is None:
            raise ConnectionClosed("the server closed the WebSocket")
        return text

    async def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._writer.write(self._ws.send(CloseConnection(code=1000)))
                await self._writer.drain()
        self.closed = True
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump
        self._writer.close()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (what a crash or a cut cable does)."""
        self.closed = True
        transport = self._writer.transport
        transport.abort()
