"""Stream state on Redis: the seller's processes share one view, one round trip an operation.

``take_over``, ``deliver`` and ``close`` are Lua scripts: Redis runs a script to the end before
any other command, so each condition (``epoch``, no statement yet) and its write are one atomic
step. Keys (``prefix`` defaults to ``lightspeed:stream:``): ``{prefix}s:{stream_id}``, a hash per
stream with the fields of :class:`~lightspeed.stream.state.StreamRecord`; ``{prefix}sellers``, a
hash url -> node id, and ``{prefix}order``, a sorted set giving the order of announcement. A
stream's hash expires ``closed_retention`` seconds after its close: the script that records the
statement sets the expiry in the same atomic step, so no closed stream is ever left without one
(a crash between two commands could otherwise keep it for ever); one closed by an earlier version
without an expiry gets one from a late close, or from the scan of the seller's periodic
``purge_closed``. A dropped connection retries a command once: safe, as a repeated conditional script finds its
condition gone (``deliver`` raises the count to the same value).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lightspeed.micro.store import StoreError
from lightspeed.stream.state import (
    CLOSED_RETENTION,
    MAX_SELLERS,
    PURGE_LIMIT,
    StreamRecord,
    StreamStore,
    StreamStoreUnavailable,
    check_announce,
    check_record,
    check_retention,
)

DEFAULT_PREFIX = b"lightspeed:stream:"
T = TypeVar("T")

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
# ARGV: epoch. Moves the epoch on if the stream is open at it.
_TAKE_OVER = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'statement') ~= '' then
    return 0 end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return 1
"""
# ARGV: epoch, delivered units.
_DELIVER = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'statement') ~= '' then
    return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'delivered_units')) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'delivered_units', ARGV[2]) end
return 1
"""
# ARGV: epoch, statement, retention in ms. Returns the statement recorded (or '' / false). A
# stream closed without an expiry (by an earlier version) gets one when a late close finds it.
_CLOSE = """
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] and redis.call('HGET', KEYS[1], 'statement') == '' then
    redis.call('HSET', KEYS[1], 'statement', ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return ARGV[2] end
local statement = redis.call('HGET', KEYS[1], 'statement')
if statement and statement ~= '' and redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return statement
"""
# KEYS: stream hashes; ARGV: retention in ms. Gives an expiry to those closed without one.
_EXPIRE_CLOSED = """
local given = 0
for _, key in ipairs(KEYS) do
    local statement = redis.call('HGET', key, 'statement')
    if statement and statement ~= '' and redis.call('PTTL', key) == -1 then
        redis.call('PEXPIRE', key, ARGV[1])
        given = given + 1
    end
end
return given
"""
_ANNOUNCE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', redis.call('ZCARD', KEYS[2]), ARGV[1])
return 1
"""


class RedisStreamStore:
    """:class:`~lightspeed.stream.state.StreamStore` on Redis (``url``: redis://...); a closed
    stream is kept ``closed_retention`` seconds."""

    def __init__(self, url: str, prefix: bytes = DEFAULT_PREFIX, closed_retention: float = CLOSED_RETENTION) -> None:
        check_retention(closed_retention)
        self._retention_ms = max(1, round(closed_retention * 1000))
        self._redis: Redis = Redis.from_url(url, retry=Retry(NoBackoff(), 1))
        self._prefix = prefix
        self._name = f"stream store {url.split('@')[-1]}"  # no password in messages
        self._create = self._redis.register_script(_CREATE)
        self._take_over = self._redis.register_script(_TAKE_OVER)
        self._deliver = self._redis.register_script(_DELIVER)
        self._close = self._redis.register_script(_CLOSE)
        self._announce = self._redis.register_script(_ANNOUNCE)
        self._expire_closed = self._redis.register_script(_EXPIRE_CLOSED)
        self._scan: int | None = 0  # where the scan for streams closed without an expiry is; None: done

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StreamStoreUnavailable(self._name, str(exc) or type(exc).__name__) from None

    def _key(self, stream_id: bytes) -> bytes:
        return self._prefix + b"s:" + stream_id

    async def create(self, record: StreamRecord) -> None:
        check_record(record)
        r = record
        fields: list[Any] = ["allowance_id", r.allowance_id, "lane", r.lane, "start_index", r.start_index,
                             "start_link", r.start_link, "tariff", r.tariff, "resume_key", r.resume_key,
                             "epoch", 0, "delivered_units", 0, "statement", ""]
        if not await self._call(self._create(keys=[self._key(r.stream_id)], args=fields)):
            raise StoreError(f"stream_id: {r.stream_id.hex()} already exists")

    async def load(self, stream_id: bytes) -> StreamRecord | None:
        h = cast(dict[bytes, bytes], await self._call(self._redis.hgetall(self._key(stream_id))))
        if not h:
            return None
        return StreamRecord(stream_id, h[b"allowance_id"], int(h[b"lane"]), int(h[b"start_index"]),
                            h[b"start_link"], h[b"tariff"].decode(), h[b"resume_key"], int(h[b"epoch"]),
                            int(h[b"delivered_units"]), h[b"statement"].decode())

    async def take_over(self, stream_id: bytes, epoch: int) -> bool:
        return bool(await self._call(self._take_over(keys=[self._key(stream_id)], args=[epoch])))

    async def deliver(self, stream_id: bytes, epoch: int, delivered_units: int) -> bool:
        return bool(await self._call(self._deliver(keys=[self._key(stream_id)], args=[epoch, delivered_units])))

    async def close(self, stream_id: bytes, epoch: int, statement: str) -> str:
        found = await self._call(self._close(keys=[self._key(stream_id)],
                                                       args=[epoch, statement, self._retention_ms]))
        return found.decode() if isinstance(found, bytes) else ""

    async def purge_closed(self, limit: int = PURGE_LIMIT) -> int:
        """Redis expires closed streams itself (the expiry is set with the statement), so nothing is
        deleted here (0). Streams closed by an earlier version without an expiry are given one: a
        scan of at most about ``limit`` keys a call, once through the keyspace per process."""
        if self._scan is None:
            return 0
        cursor, keys = await self._call(self._redis.scan(self._scan, match=_glob_escape(self._prefix) + b"s:*",
                                                         count=limit))
        if keys:
            await self._call(self._expire_closed(keys=keys, args=[self._retention_ms]))
        self._scan = int(cursor) or None
        return 0

    async def announce(self, url: str, node_id: bytes) -> None:
        check_announce(url, node_id)
        await self._call(self._announce(keys=[self._prefix + b"sellers", self._prefix + b"order"], args=[url, node_id]))

    async def sellers(self) -> list[tuple[str, bytes]]:
        urls = cast(list[bytes], await self._call(self._redis.zrange(self._prefix + b"order", 0, MAX_SELLERS - 1)))
        if not urls:
            return []
        ids = cast(list[bytes | None], await self._call(self._redis.hmget(self._prefix + b"sellers", urls)))
        return [(u.decode(), i) for u, i in zip(urls, ids, strict=True) if i is not None]

    async def aclose(self) -> None:
        await self._redis.aclose()


def _glob_escape(text: bytes) -> bytes:
    """``text`` matched literally in a Redis glob pattern (SCAN MATCH)."""
    return bytes(b for c in text for b in ((0x5C, c) if c in b"*?[]\\" else (c,)))


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: RedisStreamStore) -> StreamStore:
        return store
