"""channel_ready waits for accept_channel's minimum_depth, on both sides (BOLT 2).

BOLT 2 (channel_ready): the sender MUST wait until the funding transaction has reached
minimum_depth before sending this message. The depth is the one the accepter asked for in
accept_channel; the funder's own setting only applies to channels it accepts. Checked at the
boundary: at depth - 1 nobody has sent channel_ready, at depth both have.
"""

from __future__ import annotations

import asyncio

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node
from lightspeed.node.settings import ChannelSettings
from lightspeed.store import SqliteStore
from tests.support.network import node_key, until

SAT = 1_000_000


async def _depth_scenario(funder_depth: int, accepter_depth: int) -> None:
    chain = RegtestChain(":memory:")
    alice = Node(node_key(50), chain, b"nodefix depth alice", store=SqliteStore(":memory:"),
                 channel_settings=ChannelSettings(minimum_depth=funder_depth))
    bob = Node(node_key(51), chain, b"nodefix depth bob", store=SqliteStore(":memory:"),
               channel_settings=ChannelSettings(minimum_depth=accepter_depth))
    chain.fund(alice.wallet.new_key().script_pubkey, 2 * SAT)
    await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
    opening = asyncio.create_task(alice.open_channel(bob.node_id, SAT))
    await until(lambda: len(alice.channels) == 1 and len(bob.channels) == 1)
    (cid, channel), = alice.channels.items()
    await until(lambda: chain.get_transaction(channel.config.funding_txid) is not None)  # in the mempool
    chain.mine(accepter_depth - 1)
    await asyncio.sleep(0.4)  # the depth watchers poll every 20 ms
    assert (alice.sent_counts["channel_ready"], bob.sent_counts["channel_ready"]) == (0, 0)
    assert not opening.done()
    chain.mine(1)
    await until(lambda: alice.sent_counts["channel_ready"] == 1 and bob.sent_counts["channel_ready"] == 1)
    assert await asyncio.wait_for(opening, 10) == cid
    await until(lambda: alice.channel_is_ready(cid) and bob.channel_is_ready(cid))
    await alice.stop()
    await bob.stop()


@pytest.mark.parametrize(("funder_depth", "accepter_depth"), [(5, 2), (1, 4)])
def test_both_sides_send_channel_ready_at_the_accepters_minimum_depth(funder_depth: int, accepter_depth: int) -> None:
    """(5, 2): the funder asks for more than the accepter (it must not wait for its own 5);
    (1, 4): it asks for less (it must not send at 1)."""
    asyncio.run(asyncio.wait_for(_depth_scenario(funder_depth, accepter_depth), 30))
