"""The WebSocket server's own framing of short text frames (``wsserver._Connection._own_frames``)
against the ``websockets`` library's parser alone, on the same bytes.

The server reads whole short text frames itself and hands every other frame to the library whole.
Whatever a peer sends (valid frames of every kind and length, fragments, control frames, and the
malformed ones: unmasked, reserved bits, reserved opcodes, text that is not UTF-8, lengths past
the limit), cut into reads anywhere, the app must receive the same messages and the peer the
same bytes as with the library reading everything. The connections here are fed bytes directly
(the chunking is the test's to choose); ``test_stream15_wsserver.py`` covers the server over TCP.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightspeed.stream.wsserver import MAX_MESSAGE, WsServerState, _Connection

REQUEST = (b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class _Wire(asyncio.Transport):
    """The connection's side of a socket: what the server writes, whether it closed or paused."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0,
          claimed: int | None = None) -> bytes:
    """A client frame, written byte by byte (``claimed``: a length header that lies)."""
    size = len(payload) if claimed is None else claimed
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    if size < 126:
        head = bytes((first, (0x80 if masked else 0) | size))
    elif size < 1 << 16:
        head = bytes((first, (0x80 if masked else 0) | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def serve(chunks: list[bytes], own_framing: bool) -> tuple[list[dict[str, Any]], bytes, int | None]:
    """Feed the opening request, then ``chunks``; what the app received, what the peer got back
    after the ``101``, and the close code the connection ended with."""
    received: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "websocket.disconnect":
                return

    connection, wire = _Connection(WsServerState(app)), _Wire()
    connection.connection_made(wire)
    connection.data_received(REQUEST)
    for _ in range(3):
        await asyncio.sleep(0)  # the app accepts
    assert connection.own_framing, "our framing is on for a client that waited for the 101"
    if not own_framing:
        connection.own_framing = False
    opened = bytes(wire.written)
    assert opened.startswith(b"HTTP/1.1 101")
    for chunk in chunks:
        if wire.closing:
            break
        connection.data_received(chunk)
        await asyncio.sleep(0)
    connection.connection_lost(None)
    assert connection.task is not None
    await asyncio.wait_for(connection.task, 5)
    return received, bytes(wire.written[len(opened):]), connection.gone


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


texts = st.text(max_size=200).map(lambda t: t.encode("utf-8"))
payloads = st.binary(max_size=300)
control = st.binary(max_size=125)
one = st.one_of(  # a frame
    texts.map(lambda p: frame(0x1, p)),  # the common case, short and long
    texts.map(lambda p: frame(0x1, p)),
    payloads.map(lambda p: frame(0x2, p)),
    control.map(lambda p: frame(0x9, p)),  # ping: the library answers it
    control.map(lambda p: frame(0xA, p)),
    st.integers(1000, 1011).map(lambda code: frame(0x8, struct.pack("!H", code) + b"bye")),
    texts.map(lambda p: frame(0x1, p, masked=False)),  # malformed from here
    st.tuples(texts, st.integers(1, 7)).map(lambda a: frame(0x1, a[0], rsv=a[1])),
    st.tuples(payloads, st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xF])).map(lambda a: frame(a[1], a[0])),
    st.just(frame(0x1, b"\xff\xfe not UTF-8")),
    st.just(frame(0x0, b"a continuation of nothing")),
    st.just(frame(0x9, b"p" * 126)),  # a control frame too long
    st.just(frame(0x1, b"", claimed=MAX_MESSAGE + 1)),
    st.just(frame(0x2, b"", claimed=1 << 40)),
)
fragmented = st.one_of(  # a message in fragments, a control frame between them or not
    st.tuples(texts, texts).map(lambda ps: [frame(0x1, ps[0], fin=False), frame(0x0, ps[1])]),
    st.tuples(payloads, control, payloads).map(
        lambda ps: [frame(0x2, ps[0], fin=False), frame(0x9, ps[1]), frame(0x0, ps[2], fin=False)]),
)
frames = st.lists(st.one_of(one.map(lambda f: [f]), fragmented), max_size=12).map(
    lambda groups: [f for group in groups for f in group])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.lists(st.integers(0, 10_000), max_size=8))
def test_own_framing_gives_what_the_library_gives(sent: list[bytes], points: list[int]) -> None:
    """The reference is the library fed one whole frame per read: it then handles each frame in
    order. (Fed several frames in one read, it parses them all before any is handled, so which of
    two faults it reports, say text that is not UTF-8 followed by a stray continuation, depends on
    how the bytes were cut; our framing hands it one frame at a time, in any cut.)"""
    library = asyncio.run(serve(sent, own_framing=False))
    own = asyncio.run(serve(cut(b"".join(sent), points), own_framing=True))
    assert own == library


@pytest.mark.parametrize("own_framing", [True, False])
def test_a_message_read_with_the_close_after_it_reaches_the_app(own_framing: bool) -> None:
    """Read in one piece, a message and the close frame after it: the close's end of stream woke
    the app with the disconnect before the message was in its inbox, and the message was lost."""
    data = frame(0x1, b'{"type":"close"}') + frame(0x8, struct.pack("!H", 1000))
    received, answered, gone = asyncio.run(serve([data], own_framing=own_framing))
    assert received == [{"type": "websocket.receive", "text": '{"type":"close"}'},
                        {"type": "websocket.disconnect", "code": 1000}]
    assert answered == b"\x88\x02\x03\xe8" and gone == 1000  # the close echoed


def test_a_tick_stream_is_read_by_our_framing_in_any_cut() -> None:
    """Short text frames cut mid-header and mid-payload: each message once, in order."""
    messages = [f'{{"type":"pay","index":{i},"link":"{"ab" * 32}"}}' for i in range(50)]
    data = b"".join(frame(0x1, m.encode()) for m in messages)
    for size in (1, 2, 5, 7, 64, 1000):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        received, answered, gone = asyncio.run(serve(chunks, own_framing=True))
        assert [m.get("text") for m in received[:-1]] == messages
        assert received[-1]["type"] == "websocket.disconnect"
        assert answered == b"" and gone == 1006


EARLY = frame(0x1, b"early")


@pytest.mark.parametrize(("extra", "later"), [
    (EARLY, frame(0x1, b"after")),
    (frame(0x9, b""), frame(0x1, b"after")),
    (EARLY[:3], EARLY[3:] + frame(0x1, b"after")),  # the library is inside a frame: ours would misread it
    (EARLY[:6], EARLY[6:] + frame(0x1, b"after")),
], ids=["a-whole-frame", "a-ping", "inside-a-header", "inside-a-mask"])
def test_a_client_that_sends_before_the_101_is_read_by_the_library_alone(extra: bytes, later: bytes) -> None:
    """Bytes past the opening request reached the library with it: our framing stays off (the
    library may be inside a frame), and every message still arrives once, in order."""
    received: list[dict[str, Any]] = []

    async def go() -> bool:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] != "websocket.disconnect":
                received.append(message)

        connection, wire = _Connection(WsServerState(app)), _Wire()
        connection.connection_made(wire)
        connection.data_received(REQUEST[:40])
        connection.data_received(REQUEST[40:] + extra)  # the blank line spans no read here; below it does
        for _ in range(3):
            await asyncio.sleep(0)
        own = connection.own_framing
        connection.data_received(later)
        await asyncio.sleep(0)
        connection.connection_lost(None)
        assert connection.task is not None
        await asyncio.wait_for(connection.task, 5)
        return own

    assert asyncio.run(go()) is False
    texts = [m["text"] for m in received]
    assert texts == (["after"] if extra.startswith(b"\x89") else ["early", "after"])


@pytest.mark.parametrize("split", [len(REQUEST) - 1, len(REQUEST) - 2, len(REQUEST) - 3, len(REQUEST) - 4])
def test_a_blank_line_across_two_reads_still_turns_our_framing_on(split: int) -> None:
    async def go() -> bool:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            while (await receive())["type"] != "websocket.disconnect":
                pass

        connection, wire = _Connection(WsServerState(app)), _Wire()
        connection.connection_made(wire)
        connection.data_received(REQUEST[:split])
        connection.data_received(REQUEST[split:])
        for _ in range(3):
            await asyncio.sleep(0)
        connection.connection_lost(None)
        assert connection.task is not None
        await asyncio.wait_for(connection.task, 5)
        return connection.own_framing

    assert asyncio.run(go()) is True
