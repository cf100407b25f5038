"""A lean Redis connection for the paid-call hot path: one script, pipelined, RESP by hand.

Profiled (issue 18), redis-py cost about 100-170 µs of the event loop's CPU per command: a
pool checkout, its command packer, a parser written for every reply type and option, and a
future and lock per command. The hot path needs one thing: run one Lua script (``EVALSHA``)
and read a short array back. This module does that on one asyncio connection:

* each command is written as soon as it is made, without waiting for the replies to the
  ones before it (pipelining); Redis answers in order, so the replies are matched to the
  commands first in, first out, one future per command (a command is a whole batch of
  advances);
* RESP is encoded and parsed here (only RESP2, which is all a script reply needs);
* ``NOSCRIPT`` (Redis restarted, or ``SCRIPT FLUSH``) sends that command again as ``EVAL``
  with the script's body, which also caches the script for the next ``EVALSHA``;
* AUTH and the database number come from the URL, as ``redis.asyncio.Redis.from_url`` takes
  them (``redis://[user:password@]host[:port][/db]`` or ``unix://path?db=N``).

Connection loss: every command in flight fails with :class:`RespConnectionLost` (the store
turns it into ``StorageUnavailable`` or runs it once more, see there). A command is never
reported done unless Redis answered it. Nothing here retries on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import parse_url

from lightspeed.errors import StorageUnavailable, UsageError

Reply = bytes | int | list[Any] | None


class RespError(Exception):
    """Redis answered this command with an error reply (``-ERR ...``); the message is its text."""


class RespConnectionLost(ConnectionError):
    """The connection closed before Redis answered: the command may or may not have run."""


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def encode_command(parts: list[bytes]) -> bytes:
    """One command as a RESP array of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``)."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%s\r\n" % (len(part), part) for part in parts])


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Reply | RespError, int]:
    """The reply starting at ``pos`` and the position after it; ``_Incomplete`` if it is not
    all in ``buf`` yet. Error replies come back as a :class:`RespError` value (an error
    inside an array stays an element of it)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    pos = end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos:pos + size]), pos + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items: list[Any] = []
        for _ in range(count):
            item, pos = parse_reply(buf, pos)
            items.append(item)
        return items, pos
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return bytes(line), pos
    if kind == b"-":
        return RespError(bytes(line).decode("utf-8", "replace")), pos
    raise RespConnectionLost(f"unexpected reply type {bytes(kind)!r} from Redis")


class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, replies handed to their futures in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Reply]] = deque()
        self.buffer = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        assert self.transport is not None
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self.lost:
            future.set_exception(RespConnectionLost("the connection to Redis is closed"))
            return future
        self.transport.write(data)
        self.waiting.append(future)
        return future

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        try:
            while pos < len(buffer):
                reply, pos = parse_reply(buffer, pos)
                if not self.waiting:
                    raise RespConnectionLost("Redis sent a reply nobody asked for")
                future = self.waiting.popleft()
                if future.done():  # its caller was cancelled: the reply is read all the same
                    continue
                if isinstance(reply, RespError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (RespConnectionLost, ValueError) as exc:  # a garbled stream: trust nothing after
            del buffer[:pos]
            self._fail(RespConnectionLost(f"bad reply from Redis: {exc}"))
            if self.transport is not None:
                self.transport.abort()
            return
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespConnectionLost(f"the connection to Redis closed: {exc or 'end of stream'}"))

    def _fail(self, exc: RespConnectionLost) -> None:
        self.lost = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class RespScriptClient:
    """Runs Lua scripts over one pipelined connection to the Redis server named by ``url``.

    Connects on first use and again after a loss. :meth:`evalsha` writes at once when
    connected (the hot path: no task, no lock, one future).
    """

    def __init__(self, url: str) -> None:
        params = parse_url(url)
        if "connection_class" in params and "path" not in params:
            raise UsageError(f"store: the lean Redis client takes redis:// or unix:// URLs, not {url!r}")
        self._path: str | None = params.get("path")
        self._host: str = params.get("host", "localhost")
        self._port: int = int(params.get("port", 6379))
        self._db = int(params.get("db", 0))
        self._username: str | None = params.get("username")
        self._password: str | None = params.get("password")
        split = urlsplit(url)  # the URL as errors name it: without the password
        self.where = split._replace(netloc=split.netloc.rpartition("@")[2]).geturl()
        self._conn: _Protocol | None = None
        self._connecting = asyncio.Lock()
        self._closed = False
        self.connections = 0  # connections opened (for tests)

    @staticmethod
    def sha1(script: str) -> bytes:
        return hashlib.sha1(script.encode()).hexdigest().encode()

    def connected(self) -> bool:
        return self._conn is not None and not self._conn.lost

    def send(self, parts: list[bytes]) -> asyncio.Future[Reply]:
        """Write one command on the open connection; its reply's future (call :meth:`connect`
        first when :meth:`connected` is False)."""
        assert self._conn is not None
        return self._conn.send(encode_command(parts))

    async def command(self, parts: list[bytes]) -> Reply:
        """One command, connecting first if need be."""
        if not self.connected():
            await self.connect()
        return await self.send(parts)

    async def connect(self) -> None:
        """Open the connection (AUTH, SELECT) unless one is open; ``StorageUnavailable`` if
        Redis cannot be reached."""
        async with self._connecting:
            if self.connected():
                return
            if self._closed:
                raise UsageError("the store is closed")
            loop = asyncio.get_running_loop()
            try:
                if self._path is not None:
                    _, conn = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    _, conn = await loop.create_connection(_Protocol, self._host, self._port)
            except OSError as exc:
                raise StorageUnavailable(self.where, f"cannot connect to Redis: {exc}") from None
            setup = []
            if self._password is not None:
                auth = [self._password.encode()]
                if self._username:
                    auth.insert(0, self._username.encode())
                setup.append(conn.send(encode_command([b"AUTH", *auth])))
            if self._db:
                setup.append(conn.send(encode_command([b"SELECT", b"%d" % self._db])))
            try:
                for reply in setup:
                    await reply
            except RespError as exc:
                assert conn.transport is not None
                conn.transport.close()
                raise StorageUnavailable(self.where, f"Redis refused the connection setup: {exc}") from None
            except RespConnectionLost as exc:
                raise StorageUnavailable(self.where, str(exc)) from None
            self._conn = conn
            self.connections += 1

    def drop(self) -> None:
        """Close the connection now (commands in flight fail with ``RespConnectionLost``)."""
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.abort()

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None
