"""Node.open_channel returns the channel it opened, whatever happened to the connection meanwhile (issue 11 #9)."""

from __future__ import annotations

import asyncio

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.errors import UsageError
from lightspeed.node.node import Node
from tests.support.network import until


async def _pair() -> tuple[RegtestChain, Node, Node, int]:
    chain = RegtestChain(":memory:")
    alice = Node(b"\x21" * 32, chain, b"limits alice wallet seed")
    bob = Node(b"\x22" * 32, chain, b"limits bob wallet seed")
    for _ in range(2):
        chain.fund(alice.wallet.new_key().script_pubkey, 1_500_000)
    await alice.start()
    port = await bob.start()
    await alice.connect("127.0.0.1", port, bob.node_id)
    return chain, alice, bob, port


async def _mine_until(chain: RegtestChain, task: asyncio.Task[bytes]) -> bytes:
    while not task.done():
        chain.mine(1)
        await asyncio.sleep(0.02)
    return task.result()


def test_open_channel_survives_a_reconnect_while_it_waits() -> None:
    async def scenario() -> None:
        chain, alice, bob, port = await _pair()
        opening = asyncio.create_task(alice.open_channel(bob.node_id, 1_000_000))
        await until(lambda: len(alice.channels) == 1)  # funding_signed in: the channel exists, not ready
        await alice.connect("127.0.0.1", port, bob.node_id)  # a new connection replaces the old one
        cid = await asyncio.wait_for(_mine_until(chain, opening), 30)
        assert cid in alice.channels and alice.channel_is_ready(cid)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_second_channel_to_the_same_peer_returns_its_own_id() -> None:
    async def scenario() -> None:
        chain, alice, bob, _ = await _pair()
        first = await _mine_until(chain, asyncio.create_task(alice.open_channel(bob.node_id, 1_000_000)))
        second = await _mine_until(chain, asyncio.create_task(alice.open_channel(bob.node_id, 400_000)))
        assert first != second
        assert alice.channels[first].config.funding_sat == 1_000_000
        assert alice.channels[second].config.funding_sat == 400_000
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_open_channel_to_an_unconnected_node_is_a_clear_error() -> None:
    async def scenario() -> None:
        _, alice, bob, _ = await _pair()
        with pytest.raises(UsageError, match="not connected"):
            await alice.open_channel(b"\x02" + bytes(32), 1_000_000)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
