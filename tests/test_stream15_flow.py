"""Write flow control of the stream's WebSocket protocols (stream/flow.py): a writer waits while
the transport is paused, goes on when it resumes, and is let go when the connection is lost."""

from __future__ import annotations

import asyncio

from lightspeed.stream.flow import FlowControlledProtocol


def test_a_writer_waits_while_paused_and_goes_on_when_resumed_or_lost() -> None:
    async def go() -> None:
        protocol = FlowControlledProtocol()
        await asyncio.wait_for(protocol.drained(), 1)  # not paused: at once

        protocol.pause_writing()
        protocol.pause_writing()  # a second pause keeps the same wait
        writer = asyncio.ensure_future(protocol.drained())
        await asyncio.sleep(0.05)
        assert not writer.done()
        protocol.resume_writing()
        await asyncio.wait_for(writer, 1)

        protocol.pause_writing()
        writer = asyncio.ensure_future(protocol.drained())
        await asyncio.sleep(0.05)
        assert not writer.done()
        protocol.release_writers()  # the connection is lost: the writer sees it and stops
        await asyncio.wait_for(writer, 1)
        protocol.resume_writing()  # a late resume after the loss is harmless

    asyncio.run(go())


def test_the_server_and_client_protocols_use_it() -> None:
    from lightspeed.stream import wsclient, wsserver

    assert issubclass(wsserver._Connection, FlowControlledProtocol)
    assert issubclass(wsclient._Protocol, FlowControlledProtocol)


def test_the_sellers_fast_write_on_wsserver_hands_back_the_wait_while_the_peer_reads_slowly() -> None:
    """``send_text_now`` (the seller's write on stream.wsserver) writes the frame at once and
    returns the future to await while the transport is paused, None otherwise; nothing is
    written before the handshake is accepted or once the connection is over."""
    from websockets.protocol import State

    from lightspeed.stream import wsserver

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def is_closing(self) -> bool:
            return False

    async def go() -> None:
        connection = wsserver._Connection(wsserver.WsServerState(app=None))
        transport = Transport()
        connection.transport = transport  # type: ignore[assignment]
        assert connection.send_text_now("early") is None and transport.written == []  # not accepted
        connection.accepted = True
        connection.ws.state = State.OPEN
        assert connection.send_text_now("tick") is None
        assert transport.written and transport.written[-1].endswith(b"tick")
        connection.pause_writing()
        waiter = connection.send_text_now("slow")
        assert waiter is not None and not waiter.done() and transport.written[-1].endswith(b"slow")
        connection.resume_writing()
        assert waiter.done()
        connection.gone = 1006
        count = len(transport.written)
        assert connection.send_text_now("late") is None and len(transport.written) == count

    asyncio.run(go())
