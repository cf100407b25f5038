"""Issue 11, item 9: ``Node.open_channel`` after a real reconnect (audit).

``tests/test_limits_open.py`` reconnects with ``Node.connect``, which became idempotent later (it
returns the live connection), so that test no longer replaces the connection. Here the
connection really drops while ``open_channel`` waits for confirmations and a new one carries the
channel to ready: the call must return this channel's id (it raised StopIteration, because it
looked the channel up by the connection object it started with).
"""

from __future__ import annotations

import asyncio

from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node
from tests.support.network import until


def test_open_channel_returns_its_channel_after_the_connection_really_dropped() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(b"\xa1" * 32, chain, b"audit11 alice wallet seed")
        bob = Node(b"\xa2" * 32, chain, b"audit11 bob wallet seed!")
        chain.fund(alice.wallet.new_key().script_pubkey, 1_500_000)
        await alice.start()
        port = await bob.start()
        try:
            first = await alice.connect("127.0.0.1", port, bob.node_id)
            opening = asyncio.create_task(alice.open_channel(bob.node_id, 1_000_000))
            await until(lambda: len(alice.channels) == 1)  # funding_signed in: the channel exists, not ready
            (cid,) = alice.channels
            await first.close()
            await until(lambda: alice.peer(bob.node_id) is not first)  # the node saw it go
            second = await alice.connect("127.0.0.1", port, bob.node_id)  # or the channel peer's redial
            assert second is not first  # a new connection: the one open_channel started on is gone
            while not opening.done():
                chain.mine(1)
                await asyncio.sleep(0.02)
            assert opening.result() == cid
            assert alice.channel_is_ready(cid)
        finally:
            await alice.stop()
            await bob.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
