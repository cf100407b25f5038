"""Spent-state store on Redis: many API server instances share one view, one round trip a call.

``advance``, ``update_state``, ``create``, ``delete_unpaid`` and ``set_refund`` are Lua scripts. Redis runs a script to the end
before serving any other command, so each is atomic; they are sent with ``EVALSHA``
(falling back to the script's body once after a server restart), one round trip per call.
The advances made in one turn of the event loop go together in one script run (``_batch``):
each is still checked and applied on its own, in order.

The advances, the hot path of every paid call, go over a lean connection of their own
(``_resp``, for ``redis://`` and ``unix://`` URLs): RESP written and parsed here, each batch
written at once without waiting for the replies to the batches before it (pipelining, one
future per batch). Profiled in the paid-API server, redis-py cost about 170 µs of the event
loop's CPU per command; the lean connection about 30-50 µs per batch. Everything else
(create, load, the sweeps) stays on redis-py, as does the whole store when it is given a
client or a ``rediss://`` URL. A batch whose connection drops before Redis answered runs once
more on a new connection (safe, see below); if that fails too, its advances fail with
``StorageUnavailable`` (the middleware answers 503): none is reported done unless Redis
answered it.

Key layout (``prefix`` defaults to ``lightspeed:micro:``; binary allowance ids are used as-is):

* ``{prefix}a:{allowance_id}``: a hash, the whole allowance:
  ``terms``, ``expires_at``, ``status``, ``paid_calls``, ``spent``, ``extra``, ``lanes`` (the
  number of lanes), and per lane ``n``: ``i{n}`` (its index, decimal) and ``v{n}`` (its value).
* ``{prefix}expiring``: a sorted set of the ids of PENDING and ACTIVE allowances, scored by
  ``expires_at``; ``update_state`` removes an id when it closes.
* ``{prefix}unpaid``: a sorted set of the ids of PENDING allowances, scored by ``unpaid_until``
  (its size is the unpaid count ``create`` checks against ``max_unpaid`` in the same script).
* ``{prefix}r:{allowance_id}``: a hash, the refund record (``status``, ``attempt``,
  ``amount_msat``, ``payment_hash``, ``invoice``, ``preimage``, ``reason``, ``owner``: absent
  in records written before it, read as empty), and
  ``{prefix}refunding``: a sorted set of the ids whose refund is in flight.

One hash per allowance keeps each advance to a single key (a batch of them names each key). ``create`` and ``update_state`` also
touch the sorted set, so all keys must live on one Redis server (not a Redis Cluster).
Numbers are compared as Lua numbers, exact up to 2**53 - 1 (the stores' common cap).

The client must not decode responses (ids, terms and lane values are bytes). A client made
from a URL retries a command once if its connection drops. That is safe even when the first
attempt did run: a repeated ``advance`` finds the lane moved (STALE), a repeated
``update_state`` or ``set_refund`` finds the state changed (False), a repeated ``create``
finds the id taken (StoreError), a repeated ``delete_unpaid`` finds nothing (False); each
fails closed, nothing is spent or written twice (the server reloads after a False).
An unknown lane counts as an unknown allowance: ``Advance.NOT_ACTIVE``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from lightspeed.errors import StorageUnavailable, UsageError
from lightspeed.micro.store import (
    Advance,
    AllowanceState,
    AllowanceStore,
    LaneState,
    Refund,
    RefundStatus,
    Status,
    StoredAllowance,
    StoreError,
    StoreFull,
)
from lightspeed.micro.stores._batch import TurnBatcher, TurnPipeline
from lightspeed.micro.stores._checks import (
    check_advance,
    check_create,
    check_create_limits,
    check_refund,
    check_state,
)
from lightspeed.micro.stores._resp import Reply, RespConnectionLost, RespError, RespScriptClient

DEFAULT_PREFIX = b"lightspeed:micro:"

# KEYS: allowance hash, expiring set, unpaid set. ARGV: id, status, expires_at, unpaid_until,
# max_unpaid ('' for no cap), then field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == 'pending' then
    if ARGV[5] ~= '' and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return -1 end
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
for first = 6, #ARGV, 200 do
    redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 199, #ARGV)))
end
if ARGV[2] ~= 'closed' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
"""

# KEYS: one allowance hash per advance. ARGV: per advance, lane, expected index, new index,
# new value. The advances run in order, each seeing the ones before it (a second move of one
# lane in the batch finds the first's index: STALE). Returns one outcome per advance; an
# advance whose key cannot be read (not a hash) gets 'error: ...' and the others go on, as
# they would have in scripts of their own (Redis does not roll a failed script back).
_ADVANCE = """
local outcomes = {}
for n = 1, #KEYS do
    local lane, expected, new = ARGV[4 * n - 3], tonumber(ARGV[4 * n - 2]), tonumber(ARGV[4 * n - 1])
    local now = redis.pcall('HMGET', KEYS[n], 'status', 'spent', 'paid_calls', 'i' .. lane)
    if now.err then
        outcomes[n] = 'error: ' .. now.err
    elseif now[1] ~= 'active' or now[4] == false then
        outcomes[n] = 'not_active'
    elseif tonumber(now[4]) ~= expected then
        outcomes[n] = 'stale'
    elseif tonumber(now[2]) + new - expected > tonumber(now[3]) then
        outcomes[n] = 'over_limit'
    else
        redis.call('HSET', KEYS[n], 'i' .. lane, ARGV[4 * n - 1], 'v' .. lane, ARGV[4 * n])
        redis.call('HINCRBY', KEYS[n], 'spent', new - expected)
        outcomes[n] = 'ok'
    end
end
return outcomes
"""

_ADVANCE_SHA = RespScriptClient.sha1(_ADVANCE)

# KEYS: allowance hash, expiring set, unpaid set. ARGV: id, expected status, expected
# paid_calls, expected extra, new status, new paid_calls, new extra.
_UPDATE_STATE = """
local now = redis.call('HMGET', KEYS[1], 'status', 'paid_calls', 'extra', 'expires_at')
if now[1] ~= ARGV[2] or now[2] ~= ARGV[3] or now[3] ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'paid_calls', ARGV[6], 'extra', ARGV[7])
if ARGV[5] == 'closed' then
    redis.call('ZREM', KEYS[2], ARGV[1])
else
    redis.call('ZADD', KEYS[2], now[4], ARGV[1])
end
if ARGV[5] == 'pending' then
    redis.call('ZADD', KEYS[3], 'NX', now[4], ARGV[1])
else
    redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
"""

# KEYS: allowance hash, expiring set, unpaid set, refund hash. ARGV: id.
_DELETE_UNPAID = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: allowance hash, refund hash, refunding set. ARGV: id, expected status ('' for no
# record), expected attempt, expected payment hash, expected owner, then the new record's
# eight fields. A record without an owner field (older versions) compares as owner ''.
_SET_REFUND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'closed' then return 0 end
local now = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'payment_hash', 'owner')
if ARGV[2] == '' then
    if now[1] then return 0 end
elseif now[1] ~= ARGV[2] or now[2] ~= ARGV[3] or now[3] ~= ARGV[4] or (now[4] or '') ~= ARGV[5] then
    return 0
end
redis.call('HSET', KEYS[2], 'status', ARGV[6], 'attempt', ARGV[7], 'amount_msat', ARGV[8],
           'payment_hash', ARGV[9], 'invoice', ARGV[10], 'preimage', ARGV[11], 'reason', ARGV[12],
           'owner', ARGV[13])
if ARGV[6] == 'in_flight' then
    redis.call('ZADD', KEYS[3], 0, ARGV[1])
else
    redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
"""


_OUTCOMES = {outcome.value.encode(): outcome for outcome in Advance}

_AdvanceItem = tuple[bytes, tuple[int, int, int, bytes]]  # key; lane, expected, new index, value


def _outcome(reply: bytes) -> Advance:
    """An advance's outcome, or the Redis error that refused it (that advance alone)."""
    outcome = _OUTCOMES.get(reply)
    if outcome is None:
        raise ResponseError(reply.decode("utf-8", "replace").removeprefix("error: "))
    return outcome


class RedisAllowanceStore:
    """:class:`~lightspeed.micro.store.AllowanceStore` on Redis (``redis.asyncio``).

    ``target`` is a URL (``redis://host:port/db``; the store owns and closes that client) or
    an existing ``redis.asyncio.Redis`` client created with ``decode_responses=False`` (the
    caller keeps owning it).
    """

    def __init__(self, target: str | Redis, prefix: bytes = DEFAULT_PREFIX) -> None:
        self._lean: RespScriptClient | None = None
        if isinstance(target, str):
            # One retry on a dropped connection (restart, failover, idle timeout): safe even
            # if the first attempt ran, because every script fails closed when repeated (see
            # the module docstring).
            self._redis: Redis = Redis.from_url(target, retry=Retry(NoBackoff(), 1))
            self._owned = True
            if target.startswith(("redis://", "unix://")):
                self._lean = RespScriptClient(target)
        else:
            if target.connection_pool.connection_kwargs.get("decode_responses"):
                raise UsageError("target: the Redis client must not decode responses "
                                 "(ids and lane values are bytes)")
            self._redis = target
            self._owned = False
        self._prefix = prefix
        self._expiring_key = prefix + b"expiring"
        self._unpaid_key = prefix + b"unpaid"
        self._refunding_key = prefix + b"refunding"
        self._create = self._redis.register_script(_CREATE)
        self._advance = self._redis.register_script(_ADVANCE)
        self._advances: TurnPipeline[_AdvanceItem, bytes] | TurnBatcher[_AdvanceItem, bytes]
        if self._lean is not None:
            self._advances = TurnPipeline(self._start_advances)
        else:
            self._advances = TurnBatcher(self._advance_batch)
        self._update_state = self._redis.register_script(_UPDATE_STATE)
        self._delete_unpaid = self._redis.register_script(_DELETE_UNPAID)
        self._set_refund = self._redis.register_script(_SET_REFUND)

    def _key(self, allowance_id: bytes) -> bytes:
        return self._prefix + b"a:" + allowance_id

    def _refund_key(self, allowance_id: bytes) -> bytes:
        return self._prefix + b"r:" + allowance_id

    async def create(self, allowance_id: bytes, terms: bytes, expires_at: int,
                     anchors: Sequence[bytes], state: AllowanceState, *,
                     unpaid_until: int | None = None, max_unpaid: int | None = None) -> None:
        check_create(allowance_id, expires_at, anchors, state)
        check_create_limits(unpaid_until, max_unpaid)
        fields: list[bytes | str | int] = [
            "terms", terms, "expires_at", expires_at, "status", state.status.value,
            "paid_calls", state.paid_calls, "spent", 0, "extra", state.extra,
            "lanes", len(anchors)]
        for lane, anchor in enumerate(anchors):
            fields += [f"i{lane}", 0, f"v{lane}", anchor]
        created = await self._create(
            keys=[self._key(allowance_id), self._expiring_key, self._unpaid_key],
            args=[allowance_id, state.status.value, expires_at,
                  expires_at if unpaid_until is None else unpaid_until,
                  "" if max_unpaid is None else max_unpaid, *fields])
        if created == -1:
            raise StoreFull(f"{max_unpaid} unpaid allowances exist already")
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
        return _outcome(await self._advances.submit(
            (self._key(allowance_id), (lane, expected_index, new.index, new.value))))

    async def _advance_batch(self, batch: Sequence[_AdvanceItem]) -> list[bytes]:
        """The advances of one batch in one script run (redis-py: a client given by the caller,
        or a ``rediss://`` URL): one round trip, one command to pack."""
        outcomes: Any = await self._advance(keys=[key for key, _ in batch],
                                            args=[arg for _, args in batch for arg in args])
        return list(outcomes)

    def _start_advances(self, batch: Sequence[_AdvanceItem]) -> asyncio.Future[Sequence[bytes]]:
        """Send one batch's script run on the lean connection now; the future of its outcomes.

        Connected (the hot path), the command is written at once and its reply settles the
        batch from a callback: no task, no lock. Otherwise, and after NOSCRIPT or a lost
        connection, :meth:`_advances_again` takes over in a task.
        """
        assert self._lean is not None
        parts = [b"EVALSHA", _ADVANCE_SHA, b"%d" % len(batch)]
        parts += [key for key, _ in batch]
        for _, (lane, expected, new_index, value) in batch:
            parts += [b"%d" % lane, b"%d" % expected, b"%d" % new_index, value]
        loop = asyncio.get_running_loop()
        if not self._lean.connected():
            return loop.create_task(self._advances_again(parts, None))
        done: asyncio.Future[Sequence[bytes]] = loop.create_future()
        self._lean.send(parts).add_done_callback(
            lambda reply: self._advances_replied(parts, reply, done))
        return done

    def _advances_replied(self, parts: list[bytes], reply: asyncio.Future[Reply],
                          done: asyncio.Future[Sequence[bytes]]) -> None:
        if done.done():
            return
        if reply.cancelled() or reply.exception() is None:
            _chain(reply, done)
            return
        task = asyncio.get_running_loop().create_task(
            self._advances_again(parts, reply.exception()))
        task.add_done_callback(functools.partial(_chain_unless_done, done))

    async def _advances_again(self, parts: list[bytes], error: BaseException | None) -> list[bytes]:
        """The slow path: connect, reload the script after NOSCRIPT, run once more after a
        lost connection.

        A batch whose connection dropped before Redis answered runs once more on a new
        connection, which is safe: had it run, its lanes have moved and each of its advances
        now finds STALE (fails closed), so nothing is spent twice and no spend is reported
        done unless Redis answered it. If that fails too, the batch fails with
        ``StorageUnavailable`` (the middleware answers 503).
        """
        assert self._lean is not None
        lost = False
        for _ in range(4):
            if error is None:
                try:
                    reply = await self._lean.command(parts)
                    if not isinstance(reply, list):
                        raise StoreError(f"Redis answered a batch of advances with {reply!r}")
                    return cast(list[bytes], reply)
                except (RespError, RespConnectionLost) as exc:
                    error = exc
            if isinstance(error, RespError):
                if str(error).startswith("NOSCRIPT") and parts[0] == b"EVALSHA":
                    parts = [b"EVAL", _ADVANCE.encode(), *parts[2:]]  # caches it for EVALSHA
                    error = None
                    continue
                raise ResponseError(str(error))
            if isinstance(error, RespConnectionLost) and not lost:
                lost, error = True, None
                continue
            raise StorageUnavailable(self._lean.where, f"Redis did not answer: {error}")
        raise StorageUnavailable(self._lean.where, "Redis kept refusing the batch of advances")

    async def update_state(self, allowance_id: bytes, expected: AllowanceState,
                           new: AllowanceState) -> bool:
        check_state(new)
        written = await self._update_state(
            keys=[self._key(allowance_id), self._expiring_key, self._unpaid_key],
            args=[allowance_id, expected.status.value, expected.paid_calls, expected.extra,
                  new.status.value, new.paid_calls, new.extra])
        return bool(written == 1)

    async def expiring(self, before: int, limit: int = 100) -> list[bytes]:
        return cast(list[bytes], await self._redis.zrangebyscore(
            self._expiring_key, "-inf", f"({before}", start=0, num=limit))

    async def unpaid_count(self) -> int:
        return int(await self._redis.zcard(self._unpaid_key))

    async def unpaid_due(self, before: int, limit: int = 100) -> list[bytes]:
        return cast(list[bytes], await self._redis.zrangebyscore(
            self._unpaid_key, "-inf", f"({before}", start=0, num=limit))

    async def delete_unpaid(self, allowance_id: bytes) -> bool:
        deleted = await self._delete_unpaid(
            keys=[self._key(allowance_id), self._expiring_key, self._unpaid_key,
                  self._refund_key(allowance_id)], args=[allowance_id])
        return bool(deleted == 1)

    async def refund(self, allowance_id: bytes) -> Refund | None:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self._refund_key(allowance_id)))
        if not raw:
            return None
        return Refund(RefundStatus(raw[b"status"].decode()), int(raw[b"attempt"]),
                      int(raw[b"amount_msat"]), raw[b"payment_hash"], raw[b"invoice"].decode(),
                      raw[b"preimage"], raw[b"reason"].decode(), raw.get(b"owner", b"").decode())

    async def set_refund(self, allowance_id: bytes, expected: Refund | None, new: Refund) -> bool:
        check_refund(new)
        want: list[bytes | str | int] = ["", "", "", ""] if expected is None else [
            expected.status.value, expected.attempt, expected.payment_hash, expected.owner]
        written = await self._set_refund(
            keys=[self._key(allowance_id), self._refund_key(allowance_id), self._refunding_key],
            args=[allowance_id, *want, new.status.value, new.attempt, new.amount_msat,
                  new.payment_hash, new.invoice, new.preimage, new.reason, new.owner])
        return bool(written == 1)

    async def refunds_in_flight(self, limit: int = 100) -> list[bytes]:
        return cast(list[bytes], await self._redis.zrange(self._refunding_key, 0, limit - 1))

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        if self._owned:
            await self._redis.aclose()


def _chain_unless_done(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    if not target.done():
        _chain(source, target)


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Copy a done future's outcome to ``target``."""
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


if TYPE_CHECKING:  # mypy checks that the store meets the Protocol
    def _conforms(store: RedisAllowanceStore) -> AllowanceStore:
        return store
