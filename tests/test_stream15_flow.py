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
