"""The node's event bus: several subscribers each see every event; the default queue keeps old ones."""

from __future__ import annotations

import asyncio

from lightspeed.node.events import EventBus


def test_every_subscriber_sees_every_event_in_order() -> None:
    async def go() -> None:
        bus: EventBus[int] = EventBus()
        bus.put_nowait(0)  # before anyone subscribed: only the default queue has it
        seen: dict[str, list[int]] = {"a": [], "b": []}

        async def follow(name: str) -> None:
            async for event in bus():
                seen[name].append(event)
                if event == 3:
                    return

        followers = [asyncio.create_task(follow(n)) for n in seen]
        await asyncio.sleep(0)
        for event in (1, 2, 3):
            await bus.put(event)
        await asyncio.gather(*followers)
        assert seen == {"a": [1, 2, 3], "b": [1, 2, 3]}
        assert [await bus.get() for _ in range(4)] == [0, 1, 2, 3]
        assert bus.empty() and bus._subscribers == []  # finished loops unsubscribe

    asyncio.run(go())
