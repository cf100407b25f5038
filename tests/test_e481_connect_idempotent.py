"""Node.connect to a peer we are already connected to returns that connection (no second dial).

Electrum 4.8.1 keeps its existing connection to a node and closes a second one right after the
handshake, so a second dial failed with "peer closed the connection" although the peer was
connected. Here a real TCP relay in front of a real Lightspeed node behaves the same way: it
relays the first connection and closes every later one at once.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node


class KeepFirstRelay:
    """Relays the first TCP connection to ``port``; every later one is accepted and closed at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted > 1:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()


@pytest.mark.timeout(30)
def test_connect_again_returns_the_live_connection() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(b"\x1a" * 32, chain, b"e481 alice wallet seed")
        bob = Node(b"\x1b" * 32, chain, b"e481 bob wallet seed 1")
        relay = KeepFirstRelay(await bob.start())
        port = await relay.start()
        try:
            first = await asyncio.wait_for(alice.connect("127.0.0.1", port, bob.node_id), 10)
            second = await asyncio.wait_for(alice.connect("127.0.0.1", port, bob.node_id), 10)
            assert second is first and not first.session.closed
            assert relay.accepted == 1  # no second dial: the peer would have dropped it
            assert alice.peer_ids() == [bob.node_id]
            assert bob.peer_ids() == [alice.node_id]
            # a dropped connection is dialed again (the relay refuses it: the error reaches the caller)
            await first.close()
            await asyncio.sleep(0.05)
            with pytest.raises(Exception, match="closed"):
                await asyncio.wait_for(alice.connect("127.0.0.1", port, bob.node_id), 10)
            assert relay.accepted == 2
        finally:
            await relay.stop()
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())
