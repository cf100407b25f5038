"""Spent-state store on Redis: many API server instances share one view, one round trip a call.

``advance``, ``update_state`` and ``create`` are Lua scripts. Redis runs a script to the end
before serving any other command, so each is atomic; redis-py sends them with ``EVALSHA``
(falling back to loading the script once after a server restart), one round trip per call.

Key layout (``prefix`` defaults to ``lightspeed:micro:``; binary allowance ids are used as-is):

* ``{prefix}a:{allowance_id}``: a hash, the whole allowance:
  ``terms``, ``expires_at``, ``status``, ``paid_calls``, ``spent``, ``extra``, ``lanes`` (the
  number of lanes), and per lane ``n``: ``i{n}`` (its index, decimal) and ``v{n}`` (its value).
* ``{prefix}expiring``: a sorted set of the ids of PENDING and ACTIVE allowances, scored by
  ``expires_at``; ``update_state`` removes an id when it closes.

One hash per allowance keeps ``advance`` to a single key. ``create`` and ``update_state`` also
touch the sorted set, so all keys must live on one Redis server (not a Redis Cluster).
Numbers are compared as Lua numbers, exact up to 2**53 - 1 (the stores' common cap).

The client must not decode responses (ids, terms and lane values are bytes). A client made
from a URL retries a command once if its connection drops. That is safe even when the first
attempt did run: a repeated ``advance`` finds the lane moved (STALE), a repeated
``update_state`` finds the state changed (False), a repeated ``create`` finds the id taken
(StoreError); each fails closed, nothing is spent or written twice.
An unknown lane counts as an unknown allowance: ``Advance.NOT_ACTIVE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from lightspeed.errors import UsageError
from lightspeed.micro.store import (
    Advance,
    AllowanceState,
    AllowanceStore,
    LaneState,
    Status,
    StoredAllowance,
    StoreError,
)
from lightspeed.micro.stores._checks import check_advance, check_create, check_state

DEFAULT_PREFIX = b"lightspeed:micro:"

# KEYS: allowance hash, expiring set. ARGV: id, status, expires_at, then field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for first = 4, #ARGV, 200 do
    redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 199, #ARGV)))
end
if ARGV[2] ~= 'closed' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
"""

# KEYS: allowance hash. ARGV: lane, expected index, new index, new value.
_ADVANCE = """
local lane = ARGV[1]
local now = redis.call('HMGET', KEYS[1], 'status', 'spent', 'paid_calls', 'i' .. lane)
if now[1] ~= 'active' or now[4] == false then return 'not_active' end
if tonumber(now[4]) ~= tonumber(ARGV[2]) then return 'stale' end
local delta = tonumber(ARGV[3]) - tonumber(ARGV[2])
if tonumber(now[2]) + delta > tonumber(now[3]) then return 'over_limit' end
redis.call('HSET', KEYS[1], 'i' .. lane, ARGV[3], 'v' .. lane, ARGV[4])
redis.call('HINCRBY', KEYS[1], 'spent', delta)
return 'ok'
"""

# KEYS: allowance hash, expiring set. ARGV: id, expected status, expected paid_calls,
# expected extra, new status, new paid_calls, new extra.
_UPDATE_STATE = """
local now = redis.call('HMGET', KEYS[1], 'status', 'paid_calls', 'extra', 'expires_at')
if now[1] ~= ARGV[2] or now[2] ~= ARGV[3] or now[3] ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'paid_calls', ARGV[6], 'extra', ARGV[7])
if ARGV[5] == 'closed' then
    redis.call('ZREM', KEYS[2], ARGV[1])
else
    redis.call('ZADD', KEYS[2], now[4], ARGV[1])
end
return 1
"""


class RedisAllowanceStore:
    """:class:`~lightspeed.micro.store.AllowanceStore` on Redis (``redis.asyncio``).

    ``target`` is a URL (``redis://host:port/db``; the store owns and closes that client) or
    an existing ``redis.asyncio.Redis`` client created with ``decode_responses=False`` (the
    caller keeps owning it).
    """

    def __init__(self, target: str | Redis, prefix: bytes = DEFAULT_PREFIX) -> None:
        if isinstance(target, str):
            # One retry on a dropped connection (restart, failover, idle timeout): safe even
            # if the first attempt ran, because every script fails closed when repeated (see
            # the module docstring).
            self._redis: Redis = Redis.from_url(target, retry=Retry(NoBackoff(), 1))
            self._owned = True
        else:
            if target.connection_pool.connection_kwargs.get("decode_responses"):
                raise UsageError("target: the Redis client must not decode responses "
                                 "(ids and lane values are bytes)")
            self._redis = target
            self._owned = False
        self._prefix = prefix
        self._expiring_key = prefix + b"expiring"
        self._create = self._redis.register_script(_CREATE)
        self._advance = self._redis.register_script(_ADVANCE)
        self._update_state = self._redis.register_script(_UPDATE_STATE)

    def _key(self, allowance_id: bytes) -> bytes:
        return self._prefix + b"a:" + allowance_id

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState) -> None:
        check_create(allowance_id, expires_at, anchors, state)
        fields: list[bytes | str | int] = [
            "terms", terms, "expires_at", expires_at, "status", state.status.value,
            "paid_calls", state.paid_calls, "spent", 0, "extra", state.extra,
            "lanes", len(anchors)]
        for lane, anchor in enumerate(anchors):
            fields += [f"i{lane}", 0, f"v{lane}", anchor]
        created = await self._create(
            keys=[self._key(allowance_id), self._expiring_key],
            args=[allowance_id, state.status.value, expires_at, *fields])
        if created != 1:
            raise StoreError(f"allowance_id: {allowance_id.hex()} already exists")

    async def load(self, allowance_id: bytes) -> StoredAllowance | None:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self._key(allowance_id)))
        if not raw:
            return None
        state = AllowanceState(Status(raw[b"status"].decode()), int(raw[b"paid_calls"]),
                               int(raw[b"spent"]), raw[b"extra"].decode())
        lanes = tuple(LaneState(int(raw[b"i%d" % n]), raw[b"v%d" % n])
                      for n in range(int(raw[b"lanes"])))
        return StoredAllowance(allowance_id, raw[b"terms"], int(raw[b"expires_at"]), state, lanes)

    async def lane(self, allowance_id: bytes, lane: int) -> LaneState | None:
        index, value = cast(list[bytes | None], await self._redis.hmget(
            self._key(allowance_id), [f"i{lane}", f"v{lane}"]))
        if index is None or value is None:
            return None
        return LaneState(int(index), value)

    async def advance(self, allowance_id: bytes, lane: int, expected_index: int,
                      new: LaneState) -> Advance:
        check_advance(lane, expected_index, new)
        outcome: Any = await self._advance(keys=[self._key(allowance_id)],
                                           args=[lane, expected_index, new.index, new.value])
        return Advance(outcome.decode())

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        check_state(new)
        written = await self._update_state(
            keys=[self._key(allowance_id), self._expiring_key],
            args=[allowance_id, expected.status.value, expected.paid_calls, expected.extra,
                  new.status.value, new.paid_calls, new.extra])
        return bool(written == 1)

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        return cast(list[bytes], await self._redis.zrangebyscore(
            self._expiring_key, "-inf", f"({before}", start=0, num=limit))

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: RedisAllowanceStore) -> AllowanceStore:
        return store
