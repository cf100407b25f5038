"""Seller failover: a stream goes on at another seller process, and only its buyer may resume it.

In process: two sellers, each with its own node key and payee, sharing the allowance store
(SQLite) and the stream store; the allowance is paid to the first one's node, the second takes
the links from the shared store without any Lightning. With processes: two `lightspeed
serve-example` on one real PostgreSQL (and Redis), each its own Lightning node; kill -9 of the
one serving, mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from lightspeed.cli.stream_example import serve_asgi, stream_seller
from lightspeed.errors import PaymentError
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream import BuyerStream, Receipt, SellerStream, recompute
from lightspeed.stream.asgi import StreamSeller
from lightspeed.stream.client import BuyPolicy, StreamBuyer
from lightspeed.stream.messages import encode, parse
from lightspeed.stream.resume import sign_resume
from lightspeed.stream.state import MemoryStreamStore, StreamStoreUnavailable
from lightspeed.stream.state_postgres import PostgresStreamStore
from lightspeed.stream.state_redis import RedisStreamStore
from lightspeed.stream.tariff import Tariff
from lightspeed.stream.wsclient import WebSocket
from tests.support.ledger import Ledger
from tests.support.servers import postgres_server, redis_server

# one batch (half a window) prepays a whole test stream; streams bought in several batches across a
# failover: tests/test_stream15_failover_batches.py
TARIFF = Tariff("Wh", msat_per_unit=7, tick_units=2, max_units=2_000, window_ticks=64)


async def _fast_meter(stream: SellerStream, grant: int) -> int:
    await asyncio.sleep(0.005)
    return min(grant, 1)


async def _seller(ledger: Ledger, allowances: SqliteAllowanceStore, streams: MemoryStreamStore) -> StreamSeller:
    return stream_seller(allowances, ledger, ledger.node_id, ledger.privkey, tariff=TARIFF, meter=_fast_meter,
                         stream_store=streams)


def test_a_second_seller_with_its_own_node_resumes_the_stream_and_signs_the_statement(tmp_path: Path) -> None:
    async def scenario() -> None:
        allowances, streams = SqliteAllowanceStore(tmp_path / "allowances.sqlite"), MemoryStreamStore()
        ledger_a, ledger_b = Ledger(), Ledger()  # two nodes: the allowance is paid to a's
        a, b = await _seller(ledger_a, allowances, streams), await _seller(ledger_b, allowances, streams)
        server_a, server_b = await serve_asgi(a), await serve_asgi(b)
        await a.announce(server_a.url)
        await b.announce(server_b.url)
        try:
            def cut(buyer_stream: BuyerStream) -> None:
                if buyer_stream.delivered_units >= 20 and not buyer.reconnected and buyer.ws is not None:
                    a.streams.clear()  # a forgets it all: as good as dead for this stream
                    buyer.ws.abort()

            # the buyer is told only a's URL: a's greeting announces b
            buyer = StreamBuyer(server_a.url, ledger_a, BuyPolicy(max_msat=30 * TARIFF.tick_msat), on_update=cut)
            receipt = await buyer.run()
            assert buyer.urls == [server_a.url, server_b.url] and buyer.reconnected == 1
            statement = receipt.signed.statement
            assert statement.seller_node_id == ledger_b.node_id  # b closed it, with its own key
            checked = recompute(receipt)
            assert checked.consistent and checked.signature_valid, checked.problems
            assert checked.paid_ticks == 30 and checked.delivered_units == 60 and checked.unserved_msat == 0
            assert ledger_b.paid == {}  # b needed no Lightning: the links were checked in the shared store
            stored = await allowances.load(statement.allowance_id)
            assert stored is not None and stored.state.spent == 30 and stored.lanes[0].index == 30
            record = await streams.load(statement.stream_id)
            assert record is not None and record.delivered_units == 60 and record.epoch == 1
        finally:
            await server_a.stop()
            await server_b.stop()
            await allowances.aclose()

    asyncio.run(scenario())


def test_a_resume_needs_the_buyers_signature_not_only_the_stream_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, allowances, streams = Ledger(), SqliteAllowanceStore(tmp_path / "a.sqlite"), MemoryStreamStore()
        seller = await _seller(ledger, allowances, streams)
        server = await serve_asgi(seller)
        try:
            buyer = StreamBuyer(server.url, ledger, BuyPolicy(max_msat=5 * TARIFF.tick_msat))
            receipt = await buyer.run()
            stream_id = receipt.signed.statement.stream_id

            async def resume(**fields: Any) -> dict[str, Any]:
                ws = await WebSocket.connect(server.url)
                try:
                    hello = parse(await ws.recv(5))
                    sign = fields.pop("sign", None)
                    if sign is not None:
                        fields["signature"] = sign(hello["stream_id"])
                    await ws.send(encode("resume", stream_id=stream_id, **fields))
                    return parse(await ws.recv(5))
                finally:
                    await ws.close()

            secret = buyer._resume_secret
            answer = await resume()  # the stream id alone
            assert answer["type"] == "error" and answer["code"] == "unauthorized"
            assert answer["reason"].startswith("signature:")
            answer = await resume(sign=lambda nonce: sign_resume(os.urandom(32), stream_id, nonce, bytes(32)))
            assert answer["code"] == "unauthorized"  # someone else's key
            seen = sign_resume(secret, stream_id, b"\x01" * 16, bytes(32))  # signed for another connection
            answer = await resume(signature=seen)
            assert answer["code"] == "unauthorized"
            answer = await resume(sign=lambda nonce: sign_resume(secret, stream_id, nonce, bytes(32)))
            assert answer["type"] == "statement"  # the buyer: its stream is closed, here is the statement
            assert answer["statement"]["stream_id"] == stream_id.hex()
        finally:
            await server.stop()
            await allowances.aclose()

    asyncio.run(scenario())


# -- real processes ----------------------------------------------------------------------------------


def _serve(tmp_path: Path, name: str, chain: Path, store: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A `lightspeed serve-example` process on a free port; its ready line."""
    log = (tmp_path / f"{name}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "serve-example", "--listen", "127.0.0.1:0", "--chain", str(chain),
         "--store", store], env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=log,
        text=True)
    assert process.stdout is not None
    line = _readline(process.stdout, 60)
    if not line:
        process.kill()
        raise AssertionError(f"{name} did not start: {(tmp_path / f'{name}.log').read_text()[-2000:]}")
    return process, json.loads(line)


def _readline(stream: IO[str], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        return stream.readline() if sel.select(timeout) else ""


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as server:
        yield server.dsn


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_kill_9_of_the_serving_process_the_buyer_goes_on_at_the_other_within_a_second(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from lightspeed.chain.regtest import RegtestChain
    from lightspeed.cli.paid_example import open_channel_to_api
    from lightspeed.micro.lightning import NodePayer
    from lightspeed.micro.stores import open_allowance_store
    from lightspeed.node.node import Node
    from lightspeed.stream.state import open_stream_store

    store = request.getfixturevalue("postgres_dsn" if kind == "postgres" else "redis_url")
    if kind == "postgres":
        dsn = psycopg.conninfo.conninfo_to_dict(store)
        store = f"postgresql://{dsn['user']}@{dsn['host']}:{dsn['port']}/{dsn['dbname']}"
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS streams, stream_sellers, refunds, unpaid, lanes, allowances")
    else:
        import redis

        with redis.Redis.from_url(store) as client:
            client.flushdb()
    chain_path = tmp_path / "chain.sqlite"
    a, ready_a = _serve(tmp_path, "a", chain_path, store)
    b, ready_b = _serve(tmp_path, "b", chain_path, store)
    ticks = 40  # 12,000 msat: one batch (within half a window) prepays the whole stream

    async def scenario() -> tuple[Receipt, StreamBuyer, float, list[float]]:
        chain = RegtestChain(chain_path)
        node = Node(os.urandom(32), chain, os.urandom(32))
        await node.start()
        try:
            await open_channel_to_api(node, chain, ready_a["url"], 500_000)
            killed_at = 0.0
            deliveries: list[float] = []  # when each delivery after the kill arrived

            def on_update(s: BuyerStream) -> None:
                nonlocal killed_at
                if killed_at:
                    deliveries.append(time.monotonic())
                elif s.delivered_units >= 10:
                    a.send_signal(signal.SIGKILL)  # mid-stream: no goodbye, no closing handshake
                    killed_at = time.monotonic()

            buyer = StreamBuyer(ready_a["metered"], NodePayer(node), BuyPolicy(max_msat=ticks * 300),
                                on_update=on_update)
            receipt = await buyer.run()
            return receipt, buyer, killed_at, deliveries
        finally:
            await node.stop()

    try:
        receipt, buyer, killed_at, deliveries = asyncio.run(scenario())
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    assert a.returncode == -signal.SIGKILL
    assert buyer.urls == [ready_a["metered"], ready_b["metered"]]  # a's greeting announced b
    assert buyer.reconnected == 1 and deliveries
    gap = deliveries[0] - killed_at
    print(f"{kind}: the first unit from the other process {gap * 1000:.0f} ms after kill -9")
    assert gap < 1.0, f"the stream went on {gap:.2f} s after the kill"
    statement = receipt.signed.statement
    assert statement.seller_node_id.hex() == ready_b["node_id"]  # b's node signed, a's node sold
    # no unit delivered unpaid, none paid twice: the shared stores agree with the receipt
    checked = recompute(receipt)
    assert checked.consistent and checked.signature_valid, checked.problems
    assert checked.paid_ticks == ticks and statement.delivered_units == ticks and checked.unserved_msat == 0

    async def stored() -> tuple[int, int, int, int]:
        allowances, streams = open_allowance_store(store), open_stream_store(store)
        try:
            allowance = await allowances.load(statement.allowance_id)
            record = await streams.load(statement.stream_id)
            assert allowance is not None and record is not None
            return allowance.state.spent, allowance.lanes[0].index, record.delivered_units, record.epoch
        finally:
            await allowances.aclose()
            await streams.aclose()

    assert asyncio.run(stored()) == (ticks, ticks, ticks, 1)
    # the dispute tool agrees, with either node named as the seller's
    from tests.test_stream15_cli import verify

    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt.to_json()))
    code, out, err = verify(str(path), "--node-id", ready_b["node_id"])
    assert code == 0, err
    assert json.loads(out)["paid_ticks"] == ticks


def test_a_stream_left_paused_is_closed_then_forgotten_and_a_late_resume_gets_its_statement(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, allowances, streams = Ledger(), SqliteAllowanceStore(tmp_path / "a.sqlite"), MemoryStreamStore()
        seller = await _seller(ledger, allowances, streams)
        now = [1_000.0]
        seller.clock = lambda: now[0]
        server = await serve_asgi(seller)
        try:
            def cut(b: BuyerStream) -> None:
                if b.delivered_units >= 4 and buyer.ws is not None:
                    buyer.ws.abort()

            buyer = StreamBuyer(server.url, ledger, BuyPolicy(max_msat=20 * TARIFF.tick_msat, reconnects=0),
                                on_update=cut)
            with pytest.raises(PaymentError, match="could not be resumed"):
                await buyer.run()  # the buyer went away without closing
            assert buyer.stream is not None
            stream_id, secret = buyer.stream.stream_id, buyer._resume_secret

            async def resume() -> dict[str, Any]:
                ws = await WebSocket.connect(server.url)
                try:
                    nonce = parse(await ws.recv(5))["stream_id"]
                    await ws.send(encode("resume", stream_id=stream_id,
                                         signature=sign_resume(secret, stream_id, nonce, bytes(32))))
                    return parse(await ws.recv(5))
                finally:
                    await ws.close()

            for _ in range(100):  # the seller notices the cut
                if seller.streams[stream_id].machine.status.value == "paused":
                    break
                await asyncio.sleep(0.01)
            now[0] += seller.resume_seconds + 1
            await seller.sweep()  # paused too long: closed, its statement kept
            answer = await resume()
            assert answer["type"] == "statement" and answer["statement"]["delivered_units"] >= 4
            now[0] += seller.resume_seconds + 1
            await seller.sweep()  # closed long ago: forgotten, here and in the memory store
            assert stream_id not in seller.streams and await streams.load(stream_id) is None
            answer = await resume()
            assert answer["type"] == "error" and answer["code"] == "unknown_stream"
        finally:
            await server.stop()
            await allowances.aclose()

    asyncio.run(scenario())


def test_stream_takes_several_urls_and_names_a_bad_one() -> None:
    from click.testing import CliRunner

    from lightspeed.cli.main import cli

    result = CliRunner().invoke(cli, ["stream", "ws://127.0.0.1:1/charge", "http://127.0.0.1:2/charge",
                                      "--max-msat", "100"])
    assert result.exit_code != 0 and "url: expected ws://HOST:PORT/PATH, got 'http://127.0.0.1:2/charge'" in \
        result.stderr
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["stream", "buy", "--help"])
    assert result.exit_code == 0 and "URL [URL...]" in result.output and "next URL" in result.output


class _Gated(MemoryStreamStore):
    """The first process's view of the shared store, whose ``deliver`` waits for a gate: the moment
    between a link committed at the first process and its delivery, when the second takes over."""

    def __init__(self, shared: MemoryStreamStore) -> None:
        super().__init__()
        self.shared, self.gate, self.waiting = shared, asyncio.Event(), asyncio.Event()

    async def create(self, record: Any) -> None:
        await self.shared.create(record)

    async def load(self, stream_id: bytes) -> Any:
        return await self.shared.load(stream_id)

    async def deliver(self, stream_id: bytes, epoch: int, delivered_units: int) -> bool:
        self.waiting.set()
        await self.gate.wait()
        return await self.shared.deliver(stream_id, epoch, delivered_units)


def test_a_process_that_lost_its_stream_without_noticing_delivers_nothing_more(tmp_path: Path) -> None:
    """Fencing: the first process took the link, then the buyer (its connection half-open) resumed
    at the second one before the first delivered: only the second delivers the tick."""
    from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
    from lightspeed.stream.resume import resume_key

    async def scenario() -> None:
        allowances, shared = SqliteAllowanceStore(tmp_path / "allowances.sqlite"), MemoryStreamStore()
        ledger_a, ledger_b, gated = Ledger(), Ledger(), _Gated(shared)
        metered: dict[str, int] = {"a": 0, "b": 0}

        def meter(name: str):  # type: ignore[no-untyped-def]
            async def count(stream: SellerStream, grant: int) -> int:
                metered[name] += grant
                return grant
            return count

        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF,
                          meter=meter("a"), stream_store=gated)
        b = stream_seller(allowances, ledger_b, ledger_b.node_id, ledger_b.privkey, tariff=TARIFF,
                          meter=meter("b"), stream_store=shared)
        server_a, server_b = await serve_asgi(a), await serve_asgi(b)
        secret, tip = os.urandom(32), lane_tip(os.urandom(32), 0)
        walker = ChainWalker.from_tip(tip, 10)
        ws_a = await WebSocket.connect(server_a.url)
        try:
            stream_id = parse(await ws_a.recv(5))["stream_id"]
            await ws_a.send(encode("buy", anchor=anchor(tip, 10), ticks=10, batch_ticks=10))
            offer = parse(await ws_a.recv(5))
            await ledger_a.pay(offer["invoice"])
            await ws_a.send(encode("open", allowance_id=offer["allowance_id"], resume_key=resume_key(secret)))
            assert parse(await ws_a.recv(5))["type"] == "position"
            await ws_a.send(encode("pay", index=1, link=walker.link(1)))
            await asyncio.wait_for(gated.waiting.wait(), 5)  # a committed the link, is about to deliver
            # the buyer stops hearing from a (a does not know) and resumes at b
            ws_b = await WebSocket.connect(server_b.url)
            nonce = parse(await ws_b.recv(5))["stream_id"]
            await ws_b.send(encode("resume", stream_id=stream_id,
                                   signature=sign_resume(secret, stream_id, nonce, bytes(32))))
            position = parse(await ws_b.recv(5))
            assert (position["type"], position["last_index"], position["delivered_units"]) == ("position", 1, 0)
            assert parse(await ws_b.recv(5)) == {"type": "delivered", "units": 2, "total_units": 2}  # b delivers
            gated.gate.set()  # now a's write: refused, a is fenced
            with pytest.raises(TimeoutError):
                await ws_a.recv(0.3)  # a reports nothing: it delivered nothing
            assert metered == {"a": 0, "b": 2}  # the paid tick was delivered once
            await ws_b.close()
        finally:
            await ws_a.close()
            await server_a.stop()
            await server_b.stop()
            await allowances.aclose()

    asyncio.run(scenario())


class _Flaky(_Gated):
    """A process whose link to the shared stream store breaks after a few deliveries."""

    def __init__(self, shared: MemoryStreamStore, deliveries: int) -> None:
        super().__init__(shared)
        self.left = deliveries

    async def deliver(self, stream_id: bytes, epoch: int, delivered_units: int) -> bool:
        self.left -= 1
        if self.left < 0:
            raise StreamStoreUnavailable("stream store postgresql 10.0.0.1:5432", "connection refused")
        return await self.shared.deliver(stream_id, epoch, delivered_units)

    async def take_over(self, stream_id: bytes, epoch: int) -> bool:
        return await self.shared.take_over(stream_id, epoch)

    async def close(self, stream_id: bytes, epoch: int, statement: str) -> str:
        return await self.shared.close(stream_id, epoch, statement)

    async def sellers(self) -> list[tuple[str, bytes]]:
        return await self.shared.sellers()


def test_a_process_that_loses_the_stream_store_pauses_the_stream_and_the_buyer_goes_on_elsewhere(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        allowances, shared = SqliteAllowanceStore(tmp_path / "allowances.sqlite"), MemoryStreamStore()
        ledger_a, ledger_b = Ledger(), Ledger()
        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF,
                          meter=_fast_meter, stream_store=_Flaky(shared, 5))
        b = await _seller(ledger_b, allowances, shared)
        server_a, server_b = await serve_asgi(a), await serve_asgi(b)
        try:
            buyer = StreamBuyer([server_a.url, server_b.url], ledger_a, BuyPolicy(max_msat=20 * TARIFF.tick_msat))
            receipt = await buyer.run()
            assert buyer.reconnected == 1 and receipt.signed.statement.seller_node_id == ledger_b.node_id
            checked = recompute(receipt)
            assert checked.consistent and checked.paid_ticks == 20 and checked.delivered_units == 40
            assert checked.unserved_msat == 0  # a wrote nothing it did not deliver: b went on from there
        finally:
            await server_a.stop()
            await server_b.stop()
            await allowances.aclose()

    asyncio.run(scenario())


def test_an_unreachable_stream_store_is_an_error_naming_it() -> None:
    from tests.support.servers import free_port

    async def scenario() -> None:
        port = free_port()
        for store in (PostgresStreamStore(f"postgresql://postgres@127.0.0.1:{port}/postgres"),
                      RedisStreamStore(f"redis://127.0.0.1:{port}/0")):
            try:
                with pytest.raises(StreamStoreUnavailable, match=f"stream store .*127.0.0.1:{port}"):
                    await store.load(b"s" * 16)
            finally:
                await store.aclose()

    asyncio.run(scenario())
