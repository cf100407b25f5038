"""The seller's connection loop runs in a task of its own (fewer frames to resume per tick):
the ASGI server's task still owns it, so cancelling that task ends the connection as before."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from lightspeed.cli.stream_example import stream_seller
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream import Tariff
from lightspeed.stream.messages import parse
from tests.support.ledger import Ledger

TARIFF = Tariff("Wh", msat_per_unit=7, tick_units=2, max_units=2_000, window_ticks=8)


def test_cancelling_the_servers_task_cancels_the_connections_own_task_and_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = Ledger()
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        seller = stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=TARIFF)
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            return await inbox.get()

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/charge", "client": ("127.0.0.1", 5000)}
        server_task = asyncio.create_task(seller(scope, receive, send))
        try:
            for _ in range(500):
                if any(m["type"] == "websocket.send" for m in sent):
                    break
                await asyncio.sleep(0.01)
            assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
            assert parse(sent[1]["text"])["type"] == "tariff"
            own = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "_Connection.run"]
            assert len(own) == 1 and own[0] is not server_task
            server_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await server_task
            assert own[0].cancelled()
            assert sent[-1] == {"type": "websocket.close", "code": 1000}  # its clean-up ran
        finally:
            await store.aclose()

    asyncio.run(scenario())
