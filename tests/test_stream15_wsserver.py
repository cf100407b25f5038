"""The WebSocket-only server (``stream/wsserver.py``, on the ``websockets`` library's sans-IO
protocol), over real TCP on loopback.

The seller on it must refuse a forged link and a replayed one and deliver only after a real
payment (the ledger's signed invoices, the real allowance server and SQLite store); the server
itself must answer the RFC 6455 cases a stream never produces but a peer may send: plain HTTP,
unmasked or oversized frames, fragments, pings, reserved bits, a close. The raw peer here writes
and reads frames byte by byte (its own few lines below), so the server's answers are checked on
the wire, not through the library that produced them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from pathlib import Path

import pytest
from websockets.utils import accept_key

from lightspeed.cli.stream_example import stream_seller
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream import SellerStream, Tariff, recompute
from lightspeed.stream.asgi import StreamMiddleware
from lightspeed.stream.client import BuyPolicy, StreamBuyer
from lightspeed.stream.messages import encode, parse
from lightspeed.stream.wsclient import WebSocket
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
            answer = parse(await ws.recv(5))
            if answer["type"] == "invoice":  # the next batch is offered at 2 or 3 links left (batch_offer_spread)
                answer = parse(await ws.recv(5))
            assert answer["total_units"] == 2
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
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if line)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert {k.lower(): v for k, v in headers.items()}["sec-websocket-accept"] == accept_key(key)
    return reader, writer


CONT, TEXT, BINARY, CLOSE, PING = 0x0, 0x1, 0x2, 0x8, 0x9


def _client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked frame as a client writes it (RFC 6455 section 5.2), any bits we like set."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _server_frames(buffer: bytearray) -> list[tuple[str, object]]:
    """The complete unmasked frames at the front of ``buffer`` (consumed), as events."""
    names = {TEXT: "text", BINARY: "binary", 0xA: "pong"}
    events: list[tuple[str, object]] = []
    while len(buffer) >= 2:
        assert buffer[0] & 0x80 and not buffer[1] & 0x80, "a server sends final, unmasked frames here"
        opcode, n, head = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if n == 126:
            n, head = struct.unpack("!H", buffer[2:4])[0], 4
        if len(buffer) < head + n:
            break
        payload = bytes(buffer[head:head + n])
        del buffer[:head + n]
        if opcode == CLOSE:
            events.append(("close", (struct.unpack("!H", payload[:2])[0], payload[2:].decode())))
        else:
            events.append((names[opcode], payload.decode() if opcode == TEXT else payload))
    return events


async def _events(reader: asyncio.StreamReader, count: int) -> list[tuple[str, object]]:
    buffer, events = bytearray(), []
    while len(events) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        buffer += data
        events += _server_frames(buffer)
    return events


async def _closed_with(url: str, data: bytes) -> int:
    """Send ``data`` after the handshake: the code of the server's close frame, then its TCP close."""
    reader, writer = await _raw(url)
    writer.write(data)
    (kind, (code, _reason)), = await _events(reader, 1)  # type: ignore[misc]
    assert kind == "close"
    with contextlib.suppress(ConnectionResetError):  # a reset if what we sent was left unread
        assert await asyncio.wait_for(reader.read(), 5) == b""  # a protocol error: the server hangs up
    writer.close()
    return code  # type: ignore[no-any-return]


def test_wsserver_speaks_rfc6455_to_a_raw_peer() -> None:
    async def scenario() -> None:
        server = await serve_websockets(_routes)
        try:
            # fragments are joined, a ping is answered between them, binary comes back binary
            reader, writer = await _raw(server.url)
            writer.write(_client_frame(TEXT, "héllo, ".encode(), fin=False) + _client_frame(PING, b"p")
                         + _client_frame(CONT, "wörld".encode()) + _client_frame(BINARY, b"\x00\x01"))
            assert await _events(reader, 3) == [("pong", b"p"), ("text", "héllo, wörld"), ("binary", b"\x00\x01")]
            # a close is answered with a close (the library echoes the peer's code and reason:
            # RFC 6455 5.5.1 says an endpoint "typically echos the status code it received")
            writer.write(_client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
            assert await _events(reader, 1) == [("close", (1000, "bye"))]
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

            # a frame split into single bytes comes back whole, once
            reader, writer = await _raw(server.url)
            for byte in _client_frame(TEXT, b"x" * 300):
                writer.write(bytes([byte]))
                await writer.drain()
            assert await _events(reader, 1) == [("text", "x" * 300)]
            writer.close()

            # what RFC 6455 forbids a client: closed with the code the RFC names
            unmasked = bytes([0x81, 5]) + b"plain"
            assert await _closed_with(server.url, unmasked) == 1002  # clients must mask
            too_long = bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 20) + os.urandom(4)
            assert await _closed_with(server.url, too_long) == 1009  # before the megabyte is read
            assert await _closed_with(server.url, _client_frame(TEXT, b"\xff\xfe")) == 1007  # not UTF-8
            reserved = _client_frame(TEXT, b"x", rsv=0x40)  # RSV1: no extension was negotiated
            assert await _closed_with(server.url, reserved) == 1002
            assert await _closed_with(server.url, _client_frame(PING, b"x" * 126)) == 1002  # control > 125 B
            assert await _closed_with(server.url, _client_frame(CONT, b"x")) == 1002  # nothing to continue
            assert await _closed_with(server.url, _client_frame(CLOSE, struct.pack("!H", 1005))) == 1002
            fragments = _client_frame(TEXT, b"a" * 40_000, fin=False) + _client_frame(CONT, b"b" * 40_000)
            assert await _closed_with(server.url, fragments) == 1009  # the limit is the whole message's

            # a plain HTTP request: 426 with an error naming the field and the reason
            host, port = server.url.removeprefix("ws://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 426 ") and b'"field": "upgrade"' in answer
            writer.close()

            # not GET: the library's 405, with our JSON error
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 405 ") and b'"field": "method"' in answer
            writer.close()

            # a path the app does not serve: the app closes before accepting, the peer gets 403
            with pytest.raises(ConnectionError, match=r"403.*path: no WebSocket is served here"):
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


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


def _unmask(data: bytes) -> list[tuple[int, bytes]]:
    """The client's masked frames in ``data`` (all small): ``(opcode, payload)``."""
    frames = []
    while data:
        assert data[1] & 0x80, "a client must mask"
        n, key = data[1] & 0x7F, data[2:6]
        frames.append((data[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data[6:6 + n]))))
        data = data[6 + n:]
    return frames


def test_the_buyers_client_joins_fragments_answers_pings_and_refuses_bad_text() -> None:
    """A raw server sends what the stream protocol never does; the client must still follow RFC 6455."""
    async def scenario() -> None:
        seen: asyncio.Queue[bytes] = asyncio.Queue()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = next(line.split(": ", 1)[1] for line in head.split("\r\n")
                       if line.lower().startswith("sec-websocket-key:"))
            writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode())
            writer.write(_server_frame(TEXT, "héllo, ".encode(), fin=False) + _server_frame(PING, b"p")
                         + _server_frame(CONT, "wörld".encode()) + _server_frame(TEXT, b"\xff\xfe"))
            await writer.drain()
            data = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await asyncio.wait_for(reader.read(4096), 5):
                    data += chunk
            await seen.put(data)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            ws = await WebSocket.connect(f"ws://127.0.0.1:{port}/x")
            assert await ws.recv(5) == "héllo, wörld"
            with pytest.raises(ConnectionError, match="closed"):
                await ws.recv(5)  # the text that is not UTF-8 ended the connection
            assert ws.closed
            frames = _unmask(await asyncio.wait_for(seen.get(), 10))
            assert frames[0] == (0xA, b"p")  # the pong
            assert frames[1][0] == CLOSE and struct.unpack("!H", frames[1][1][:2])[0] == 1007
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_the_buyers_recv_times_out_at_each_call_s_own_timeout_short_after_long() -> None:
    """One timer per connection watches ``recv``'s deadline: a short timeout after a long one
    must still expire on time, and a message arriving in time is returned."""
    async def scenario() -> None:
        server = await serve_websockets(_routes)
        try:
            ws = await WebSocket.connect(server.url + "/echo")
            await ws.send("one")
            assert await ws.recv(5.0) == "one"  # arms the watch for 5 s; answered at once
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await ws.recv(0.2)  # nothing is sent: gives up after 0.2 s, not 5
            assert 0.15 < loop.time() - started < 2.0
            started = loop.time()
            with pytest.raises(TimeoutError):
                await ws.recv(0.3)
            assert 0.25 < loop.time() - started < 2.0
            await ws.send("two")
            assert await ws.recv(0.5) == "two"
            await asyncio.sleep(0.6)  # the watch fires with nobody waiting: nothing breaks
            await ws.send("three")
            assert await ws.recv(1.0) == "three"
            await ws.close()
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_resume_while_the_old_connection_is_inside_its_meter_meters_each_unit_once(tmp_path: Path) -> None:
    """The old connection's tick is being metered (a slow meter) when the buyer resumes the
    stream on a new connection of the same process: the old delivery must end before the new
    connection delivers, so no unit is metered by both and the stream goes on (a double report
    would end it as ``meter_failed``)."""
    from lightspeed.stream.resume import resume_key, sign_resume

    inside: list[int] = []
    concurrent = [0]

    async def slow_meter(stream: SellerStream, grant: int) -> int:
        inside.append(grant)
        if len(inside) > 1 + concurrent[0]:
            concurrent[0] = -1000  # two meter calls at once for one stream
        try:
            await asyncio.sleep(0.5)
        finally:
            inside.pop()
        return min(grant, 1)

    async def scenario() -> None:
        ledger = Ledger()
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        seller = stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=TARIFF, meter=slow_meter)
        server = await serve_websockets(StreamMiddleware(_routes, {"/charge": seller}))
        try:
            old = await WebSocket.connect(server.url + "/charge")
            assert parse(await old.recv(5))["type"] == "tariff"
            secret, ticks = os.urandom(32), 20
            tip = lane_tip(os.urandom(32), 0)
            await old.send(encode("buy", anchor=anchor(tip, ticks), ticks=ticks, batch_ticks=5))
            offer = parse(await old.recv(5))
            await ledger.pay(offer["invoice"])
            await old.send(encode("open", allowance_id=offer["allowance_id"], resume_key=resume_key(secret)))
            position = parse(await old.recv(5))
            walker = ChainWalker.from_tip(tip, ticks)
            await old.send(encode("pay", index=1, link=walker.link(1)))
            await asyncio.sleep(0.15)  # the old connection is inside the meter now
            new = await WebSocket.connect(server.url + "/charge")
            nonce = parse(await new.recv(5))["stream_id"]
            signature = sign_resume(secret, position["stream_id"], nonce, os.urandom(32))
            await new.send(encode("resume", stream_id=position["stream_id"], signature=signature))
            resumed = parse(await new.recv(5))
            assert resumed["type"] == "position"
            live = seller.streams[position["stream_id"]]
            if resumed["delivered_units"] == 0:  # the tick paid on the old connection is delivered here
                assert parse(await new.recv(5)) == {"type": "delivered", "units": 1, "total_units": 1}
            for index in (2, 3):
                await new.send(encode("pay", index=index, link=walker.link(index)))
                message = parse(await new.recv(5))
                if message["type"] == "invoice":  # the next batch, offered ahead once half is spent
                    message = parse(await new.recv(5))
                assert message == {"type": "delivered", "units": 1, "total_units": index}, message
            assert concurrent[0] == 0, "the meter ran twice at once for one stream"
            assert live.machine.delivered_units == 3 and live.machine.status.value == "open"
            await new.send(encode("close"))
            statement = parse(await new.recv(5))
            assert statement["statement"]["delivered_units"] == 3
            await new.close()
            await old.close()
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_receive_the_app_cancels_loses_no_message_and_a_close_still_reaches_it() -> None:
    """``receive()`` is a future the server sets: an app that gives up waiting (a timeout) must
    find the next message in its next ``receive()``, and a peer's close as ``websocket.disconnect``."""
    got: list[str] = []
    finished = asyncio.Event()

    async def impatient(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(receive(), 0.05)  # nothing sent yet: the wait is cancelled
        await send({"type": "websocket.send", "text": "ready"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                got.append(f"disconnect {message['code']}")
                finished.set()
                return
            got.append(message["text"])
            await send({"type": "websocket.send", "text": message["text"]})

    async def scenario() -> None:
        server = await serve_websockets(impatient)
        try:
            ws = await WebSocket.connect(server.url)
            assert await ws.recv(5) == "ready"
            for text in ("one", "two", "three"):
                await ws.send(text)
                assert await ws.recv(5) == text
            await ws.close()
            await asyncio.wait_for(finished.wait(), 5)
        finally:
            await server.stop()

    asyncio.run(scenario())
    assert got == ["one", "two", "three", "disconnect 1000"]
