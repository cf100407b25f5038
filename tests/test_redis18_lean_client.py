"""The lean pipelined Redis connection of the paid-call hot path (micro/stores/_resp.py), against
a real redis-server: commands pipelined and answered in order, NOSCRIPT after SCRIPT FLUSH, a
killed server or a lost reply never reported as a spend done, replies split across TCP reads,
AUTH and the database number from the URL. Faults are made with a real TCP relay in between."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
import redis.asyncio

from lightspeed.errors import StorageUnavailable
from lightspeed.micro.store import Advance, AllowanceState, LaneState, Status
from lightspeed.micro.stores._resp import (
    RespError,
    RespScriptClient,
    _Incomplete,
    encode_command,
    parse_reply,
)
from lightspeed.micro.stores.redis import RedisAllowanceStore
from tests.support.servers import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def new_store(url: str) -> RedisAllowanceStore:
    return RedisAllowanceStore(url, prefix=f"t:{os.urandom(6).hex()}:".encode())


async def new_allowance(store: RedisAllowanceStore, paid: int = 100, lanes: int = 2) -> bytes:
    allowance_id = os.urandom(16)
    await store.create(allowance_id, b"terms", 10_000, [bytes([n]) * 32 for n in range(lanes)],
                       AllowanceState(Status.ACTIVE, paid))
    return allowance_id


async def spent(store: RedisAllowanceStore, allowance_id: bytes) -> int:
    loaded = await store.load(allowance_id)
    assert loaded is not None
    return loaded.state.spent


# Gets each chunk of Redis's replies and the client's writer: forwards it (its way) and
# returns True, or returns False to drop the client's connection instead.
Relay = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


async def relay(port: int, to_client: Relay) -> tuple[asyncio.Server, str]:
    """A TCP relay to Redis on ``port``: requests go through as they are, Redis's replies
    through ``to_client``. Returns the server and a redis:// URL through it."""
    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", port)

        async def up() -> None:
            while data := await client_r.read(65536):
                redis_w.write(data)
            redis_w.close()

        async def down() -> None:
            while data := await redis_r.read(65536):
                if not await to_client(data, client_w):
                    client_w.transport.abort()
                    return
            client_w.close()

        await asyncio.gather(up(), down(), return_exceptions=True)
        redis_w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"


def redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# ------------------------------------------------------------------------------ protocol


def test_every_split_of_a_reply_parses_only_once_it_is_whole() -> None:
    """A reply cut anywhere (across TCP reads) is incomplete until its last byte arrives."""
    replies = [b"*3\r\n$2\r\nok\r\n$5\r\nstale\r\n$-1\r\n", b":42\r\n", b"+OK\r\n",
               b"-NOSCRIPT No matching script\r\n", b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n", b"*-1\r\n"]
    expected = [[b"ok", b"stale", None], 42, b"OK", "NOSCRIPT No matching script",
                [[1], b""], None]
    for reply, want in zip(replies, expected, strict=True):
        for cut in range(len(reply)):
            with pytest.raises(_Incomplete):
                parse_reply(reply[:cut], 0)
        value, end = parse_reply(reply + b":7\r\n", 0)
        assert end == len(reply)
        assert (str(value) if isinstance(value, RespError) else value) == want


def test_commands_are_encoded_as_arrays_of_bulk_strings() -> None:
    assert encode_command([b"EVALSHA", b"ab", b"0"]) == (
        b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n0\r\n")


def test_commands_are_pipelined_and_replies_matched_in_order(redis_url: str) -> None:
    async def main() -> None:
        client = RespScriptClient(redis_url)
        key = b"t:" + os.urandom(6).hex().encode()
        try:
            await client.connect()
            replies = [client.send([b"INCR", key]) for _ in range(200)]
            assert client._conn is not None and len(client._conn.waiting) == 200  # all in flight
            assert await asyncio.gather(*replies) == list(range(1, 201))
            failing = client.send([b"HGET", key, b"x"])  # WRONGTYPE: fails this command alone
            after = client.send([b"GET", key])
            with pytest.raises(RespError, match="WRONGTYPE"):
                await failing
            assert await after == b"200"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_batches_of_successive_turns_are_in_flight_together_and_apply_in_order(redis_url: str) -> None:
    async def main() -> None:
        store = new_store(redis_url)
        try:
            aid = await new_allowance(store, lanes=1)
            await store.advance(aid, 0, 0, LaneState(1, b"1"))  # connected
            in_flight: list[int] = []

            async def spend(index: int) -> Advance:
                for _ in range(index):  # one batch per turn of the loop
                    await asyncio.sleep(0)
                outcome = store.advance(aid, 0, index, LaneState(index + 1, b"%d" % index))
                task = asyncio.ensure_future(outcome)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                assert store._lean is not None and store._lean._conn is not None
                in_flight.append(len(store._lean._conn.waiting))
                return await task

            before = store._advances.batches
            outcomes = await asyncio.gather(*(spend(i) for i in range(1, 9)))
            assert outcomes == [Advance.OK] * 8  # each found the one before it applied
            assert store._advances.batches == before + 8
            assert max(in_flight) > 1  # a batch went out before the previous one's reply
            assert await spent(store, aid) == 9
        finally:
            await store.aclose()

    asyncio.run(main())


def test_noscript_after_script_flush_reloads_the_script(redis_url: str) -> None:
    async def main() -> None:
        store = new_store(redis_url)
        try:
            aid = await new_allowance(store)
            assert await store.advance(aid, 0, 0, LaneState(1, b"a")) is Advance.OK
            with redis.Redis.from_url(redis_url) as client:
                client.script_flush()
            outcomes = await asyncio.gather(store.advance(aid, 0, 1, LaneState(2, b"b")),
                                            store.advance(aid, 1, 0, LaneState(1, b"c")))
            assert outcomes == [Advance.OK, Advance.OK]
            with redis.Redis.from_url(redis_url) as client:  # cached again for EVALSHA
                from lightspeed.micro.stores.redis import _ADVANCE_SHA
                assert client.script_exists(_ADVANCE_SHA.decode()) == [True]
            assert await store.advance(aid, 0, 2, LaneState(3, b"d")) is Advance.OK
            assert await spent(store, aid) == 4
        finally:
            await store.aclose()

    asyncio.run(main())


def test_a_server_killed_mid_batch_fails_it_with_storage_unavailable() -> None:
    """Redis paused (the batch is written, not run), then killed: no advance reports done."""
    async def main() -> None:
        with redis_server() as server:
            store = new_store(server.url)
            try:
                aid = await new_allowance(store)
                assert await store.advance(aid, 0, 0, LaneState(1, b"a")) is Advance.OK
                with redis.Redis.from_url(server.url) as client:
                    pid = int(client.info("server")["process_id"])
                    client.execute_command("CLIENT", "PAUSE", "20000", "ALL")
                spends = asyncio.gather(
                    store.advance(aid, 0, 1, LaneState(2, b"b")),
                    store.advance(aid, 1, 0, LaneState(1, b"c")), return_exceptions=True)
                await asyncio.sleep(0.2)
                assert store._lean is not None and store._lean._conn is not None
                assert len(store._lean._conn.waiting) == 1  # the batch is in flight
                os.kill(pid, signal.SIGKILL)
                outcomes = await asyncio.wait_for(spends, 10)
                assert all(isinstance(o, StorageUnavailable) for o in outcomes), outcomes
                assert "127.0.0.1" in str(outcomes[0])
            finally:
                await store.aclose()

    asyncio.run(main())


def test_a_reply_lost_with_its_connection_is_never_reported_as_a_spend_done(redis_url: str) -> None:
    """The batch ran in Redis but its reply never arrived: run once more, it finds its lane
    moved (STALE). The spend happened once and no caller was told OK for it without Redis
    saying so on a live connection."""
    async def main() -> None:
        drops = {"left": 0}

        async def drop_when_armed(data: bytes, writer: asyncio.StreamWriter) -> bool:
            if drops["left"]:
                drops["left"] -= 1
                return False
            writer.write(data)
            return True

        proxy, url = await relay(redis_port(redis_url), drop_when_armed)
        store = new_store(url)
        try:
            aid = await new_allowance(store, lanes=1)
            assert await store.advance(aid, 0, 0, LaneState(1, b"a")) is Advance.OK
            drops["left"] = 1
            assert await asyncio.wait_for(
                store.advance(aid, 0, 1, LaneState(2, b"b")), 20) is Advance.STALE
            assert store._lean is not None and store._lean.connections == 2
            assert await spent(store, aid) == 2  # spent once, by the run whose reply was lost
            assert await store.advance(aid, 0, 2, LaneState(3, b"c")) is Advance.OK
        finally:
            await store.aclose()
            proxy.close()

    asyncio.run(main())


def test_replies_split_into_single_bytes_across_reads(redis_url: str) -> None:
    async def main() -> None:
        async def one_byte_at_a_time(data: bytes, writer: asyncio.StreamWriter) -> bool:
            for n in range(len(data)):
                writer.write(data[n:n + 1])
                await writer.drain()
                await asyncio.sleep(0.001)  # a read each
            return True

        proxy, url = await relay(redis_port(redis_url), one_byte_at_a_time)
        store = new_store(url)
        try:
            aid = await new_allowance(store, lanes=2)
            outcomes = await asyncio.wait_for(asyncio.gather(
                store.advance(aid, 0, 0, LaneState(1, b"a")),
                store.advance(aid, 0, 0, LaneState(1, b"b")),
                store.advance(aid, 1, 0, LaneState(500, b"c")),
                store.advance(aid, 1, 0, LaneState(2, b"d"))), 20)
            assert outcomes == [Advance.OK, Advance.STALE, Advance.OVER_LIMIT, Advance.OK]
            assert await spent(store, aid) == 3
        finally:
            await store.aclose()
            proxy.close()

    asyncio.run(main())


def test_auth_and_database_come_from_the_url() -> None:
    async def main() -> None:
        with redis_server() as server:
            with redis.Redis.from_url(server.url) as client:
                client.config_set("requirepass", "s3cret")
            url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
            store = RedisAllowanceStore(url, prefix=b"t:")
            try:
                aid = await new_allowance(store)
                assert await store.advance(aid, 0, 0, LaneState(1, b"a")) is Advance.OK
            finally:
                await store.aclose()
            with redis.Redis(port=server.port, password="s3cret", db=3) as client:
                assert client.hget(b"t:a:" + aid, "i0") == b"1"  # in database 3
            wrong = RedisAllowanceStore(f"redis://:nope@127.0.0.1:{server.port}/3", prefix=b"t:")
            try:
                with pytest.raises(StorageUnavailable) as refused:
                    await wrong.advance(aid, 0, 1, LaneState(2, b"b"))
                assert "nope" not in str(refused.value)  # the password is not echoed
                assert "WRONGPASS" in str(refused.value) or "invalid" in str(refused.value)
            finally:
                await wrong.aclose()

    asyncio.run(main())


def test_a_store_given_a_client_keeps_redis_py_for_its_advances(redis_url: str) -> None:
    """The caller's own client (its pool, TLS, options) is used as given: no lean connection."""
    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisAllowanceStore(client, prefix=f"t:{os.urandom(6).hex()}:".encode())
        try:
            assert store._lean is None
            aid = await new_allowance(store)
            outcomes = await asyncio.gather(store.advance(aid, 0, 0, LaneState(1, b"a")),
                                            store.advance(aid, 0, 0, LaneState(1, b"b")),
                                            store.advance(aid, 1, 0, LaneState(500, b"c")))
            assert outcomes == [Advance.OK, Advance.STALE, Advance.OVER_LIMIT]
            assert await spent(store, aid) == 1
        finally:
            await store.aclose()
            await client.aclose()

    asyncio.run(main())
