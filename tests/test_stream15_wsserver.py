"""The WebSocket-only server (``stream/wsserver.py``) and its codec, over real TCP on loopback.

The seller on it must refuse a forged link and a replayed one and deliver only after a real
payment (the ledger's signed invoices, the real allowance server and SQLite store); the server
itself must answer the RFC 6455 cases a stream never produces but a peer may send: plain HTTP,
unmasked or oversized frames, fragments, pings, a close.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path

import pytest

from lightspeed.cli.stream_example import stream_seller
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream import SellerStream, Tariff, recompute
from lightspeed.stream.asgi import StreamMiddleware
from lightspeed.stream.client import BuyPolicy, StreamBuyer
from lightspeed.stream.messages import encode, parse
from lightspeed.stream.wsclient import WebSocket
from lightspeed.stream.wsframes import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    TEXT,
    FrameReader,
    WsProtocolError,
    accept_key,
    frame,
)
from lightspeed.stream.wsserver import serve_websockets
from tests.support.ledger import Ledger

TARIFF = Tariff("Wh", msat_per_unit=5, tick_units=1, max_units=1_000, window_ticks=10)


async def _meter(stream: SellerStream, grant: int) -> int:
    await asyncio.sleep(0)
    return min(grant, 1)


async def _echo(scope: object, receive, send) -> None:  # type: ignore[no-untyped-def]
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k in ("text", "bytes")}})


async def _routes(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["path"] == "/echo":
        await _echo(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1000})  # before accept: HTTP 403


async def _start(tmp_path: Path):  # type: ignore[no-untyped-def]
    ledger = Ledger()
    store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
    seller = stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=TARIFF, meter=_meter)
    server = await serve_websockets(StreamMiddleware(_routes, {"/charge": seller}))
    return ledger, store, seller, server


async def _open_paid(ws: WebSocket, ledger: Ledger, ticks: int = 20) -> ChainWalker:
    """Buy a lane of ``ticks`` links, pay its first batch through the ledger, open the stream."""
    assert parse(await ws.recv(5))["type"] == "tariff"
    tip = lane_tip(os.urandom(32), 0)
    await ws.send(encode("buy", anchor=anchor(tip, ticks), ticks=ticks, batch_ticks=5))
    offer = parse(await ws.recv(5))
    assert offer["type"] == "invoice"
    await ledger.pay(offer["invoice"])
    await ws.send(encode("open", allowance_id=offer["allowance_id"]))
    assert parse(await ws.recv(5))["type"] == "position"
    return ChainWalker.from_tip(tip, ticks)


def test_the_seller_on_wsserver_delivers_after_a_real_payment_and_refuses_forged_and_replayed_links(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, seller, server = await _start(tmp_path)
        try:
            ws = await WebSocket.connect(server.url + "/charge")
            walker = await _open_paid(ws, ledger)
            # nothing is delivered before a link pays for it
            with pytest.raises(TimeoutError):
                await ws.recv(0.2)
            first = walker.link(1)
            await ws.send(encode("pay", index=1, link=first))
            assert parse(await ws.recv(5)) == {"type": "delivered", "units": 1, "total_units": 1}
            await ws.send(encode("pay", index=1, link=first))  # the same link again
            assert parse(await ws.recv(5))["code"] == "replayed"
            await ws.send(encode("pay", index=2, link=os.urandom(32)))  # not the next link of the lane
            assert parse(await ws.recv(5))["code"] == "forged"
            # neither refusal delivered anything nor moved the lane in the store
            live = next(iter(seller.streams.values()))
            assert live.machine.delivered_units == 1
            status = await seller.allowances.status(live.machine.allowance_id)
            assert status["spent"] == 1
            await ws.send(encode("pay", index=2, link=walker.link(2)))
            assert parse(await ws.recv(5))["total_units"] == 2
            await ws.send(encode("close"))
            assert parse(await ws.recv(5))["type"] == "statement"
            await ws.close()
            # and a real buyer streams its budget with a receipt that recomputes from its links
            receipt = await StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=12 * TARIFF.tick_msat)).run()
            checked = recompute(receipt)
            assert checked.consistent and checked.paid_ticks == 12 and checked.delivered_units == 12
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


async def _raw(url: str, path: str = "/echo") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ") and f"sec-websocket-accept: {accept_key(key)}".encode() in head
    return reader, writer


def _client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    whole = frame(opcode, payload, mask=True)
    return bytes([whole[0] & 0x7F | (0x80 if fin else 0)]) + whole[1:]


async def _events(reader: asyncio.StreamReader, count: int) -> list[tuple[str, object]]:
    frames = FrameReader(masked=False)
    events: list[tuple[str, object]] = []
    while len(events) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        events += frames.feed(data)
    return events


def test_wsserver_speaks_rfc6455_to_a_raw_peer() -> None:
    async def scenario() -> None:
        server = await serve_websockets(_routes)
        try:
            # fragments are joined, a ping is answered between them, binary comes back binary
            reader, writer = await _raw(server.url)
            writer.write(_client_frame(TEXT, "héllo, ".encode(), fin=False) + _client_frame(PING, b"p")
                         + _client_frame(CONT, "wörld".encode()) + _client_frame(BINARY, b"\x00\x01"))
            assert await _events(reader, 3) == [("pong", b"p"), ("text", "héllo, wörld"), ("binary", b"\x00\x01")]
            # a close is answered with a close, and the connection ends
            writer.write(_client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
            assert await _events(reader, 1) == [("close", (1000, ""))]
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

            # an unmasked frame from a client: closed with 1002 (protocol error)
            reader, writer = await _raw(server.url)
            writer.write(frame(TEXT, b"unmasked"))
            (kind, (code, _reason)), = await _events(reader, 1)  # type: ignore[misc]
            assert kind == "close" and code == 1002
            writer.close()

            # a frame longer than the limit: closed with 1009 (too big) before it is read
            reader, writer = await _raw(server.url)
            writer.write(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 20) + os.urandom(4))
            (kind, (code, _reason)), = await _events(reader, 1)  # type: ignore[misc]
            assert kind == "close" and code == 1009
            writer.close()

            # text that is not UTF-8: 1007
            reader, writer = await _raw(server.url)
            writer.write(_client_frame(TEXT, b"\xff\xfe"))
            (kind, (code, _reason)), = await _events(reader, 1)  # type: ignore[misc]
            assert kind == "close" and code == 1007
            writer.close()

            # a plain HTTP request: 426 with an error naming the field and the reason
            host, port = server.url.removeprefix("ws://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 426 ") and b'"field": "upgrade"' in answer
            writer.close()

            # a path the app does not serve: the app closes before accepting, the peer gets 403
            with pytest.raises(ConnectionError, match="403"):
                await WebSocket.connect(server.url + "/nothing")
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_peer_that_never_finishes_its_handshake_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightspeed.stream.wsserver as wsserver

    monkeypatch.setattr(wsserver, "HANDSHAKE_TIMEOUT", 0.2)

    async def scenario() -> None:
        server = await serve_websockets(_routes)
        try:
            host, port = server.url.removeprefix("ws://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped, not held forever
            writer.close()
            assert not server._state.connections
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_the_codec_refuses_what_rfc6455_forbids() -> None:
    server_side = FrameReader(masked=True)
    with pytest.raises(WsProtocolError) as refused:
        server_side.feed(bytes([0xC1, 0x80]) + os.urandom(4))  # RSV1 set: no extension was negotiated
    assert refused.value.code == 1002
    with pytest.raises(WsProtocolError) as refused:
        FrameReader(masked=True).feed(_client_frame(PING, b"x" * 126))  # a control frame over 125 bytes
    assert refused.value.code == 1002
    with pytest.raises(WsProtocolError) as refused:
        FrameReader(masked=True).feed(_client_frame(CONT, b"x"))  # nothing to continue
    assert refused.value.code == 1002
    with pytest.raises(WsProtocolError) as refused:
        FrameReader(masked=True).feed(_client_frame(CLOSE, struct.pack("!H", 1005)))  # a code never sent
    assert refused.value.code == 1002
    # a frame split anywhere comes out whole, once
    whole = _client_frame(TEXT, b"x" * 300)
    reader = FrameReader(masked=True)
    assert [reader.feed(whole[i:i + 1]) for i in range(len(whole))][-1] == [("text", "x" * 300)]
