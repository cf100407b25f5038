"""Which channels we announce and what our channel_update promises (BOLT 7).

* The funder's announce_channel bit in open_channel decides, for both sides and for the
  channel's whole life: a fundee that would like public channels, or a funder that changed
  its mind after opening, MUST NOT send announcement_signatures for a channel opened private.
* Our public channel_update's htlc_minimum_msat is at least the minimum the channel peer will
  accept (its accept/open_channel's htlc_minimum_msat), as forwarding over it requires.
"""

from __future__ import annotations

import asyncio

from lightspeed.chain import RegtestChain
from lightspeed.gossip import direction_of
from lightspeed.node.gossip_runtime import ANNOUNCE_DEPTH
from lightspeed.node.node import Node
from lightspeed.node.settings import ChannelSettings
from lightspeed.payments.forward import ForwardingPolicy
from tests.support.network import node_key, until, with_miner

SAT = 1_000_000
MAX = (1 << 63) - 1


async def _scenario() -> None:
    chain = RegtestChain(":memory:")
    # Alice accepts HTLCs from 7,000 msat and forwards from 1; Bob accepts from 5,000, forwards from 10,000.
    alice = Node(node_key(60), chain, b"nodefix announce alice", announce_channels=False,
                 channel_settings=ChannelSettings(htlc_minimum_msat=7_000),
                 forwarding_policy=ForwardingPolicy(1_000, 100, 40, htlc_minimum_msat=1, htlc_maximum_msat=MAX))
    bob = Node(node_key(61), chain, b"nodefix announce bob", announce_channels=True,
               channel_settings=ChannelSettings(htlc_minimum_msat=5_000),
               forwarding_policy=ForwardingPolicy(1_000, 100, 40, htlc_minimum_msat=10_000, htlc_maximum_msat=MAX))
    for _ in range(2):
        chain.fund(alice.wallet.new_key().script_pubkey, 2 * SAT)
    await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
    cids: list[bytes] = []

    async def open_both() -> None:
        cids.append(await alice.open_channel(bob.node_id, SAT))  # announce_channel bit unset
        alice.announce_channels = True  # Alice changes her mind: public channels from now on
        cids.append(await alice.open_channel(bob.node_id, SAT))  # announce_channel bit set

    try:
        await with_miner(chain, open_both)
        private, public = cids
        chain.mine(ANNOUNCE_DEPTH)
        scid_private, scid_public = alice.short_channel_id(private), alice.short_channel_id(public)
        assert scid_private is not None and scid_public is not None
        alice_view, bob_view = alice.gossip.gossiper.view.store, bob.gossip.gossiper.view.store
        to_bob, to_alice = direction_of(alice.node_id, bob.node_id), direction_of(bob.node_id, alice.node_id)
        # The public channel is announced, each side's update published: the private one had every chance too.
        await until(lambda: alice_view.update(scid_public, to_bob) is not None
                    and bob_view.update(scid_public, to_alice) is not None, timeout=15)
        await asyncio.sleep(0.3)  # a few more gossip ticks

        # BOLT 7: otherwise (announce_channel unset): MUST NOT send announcement_signatures.
        assert private not in alice.gossip._ours and private not in bob.gossip._ours
        assert private not in alice.gossip._theirs and private not in bob.gossip._theirs
        for view in (alice_view, bob_view):
            record = view.channel(scid_private)
            assert record is None or not record.public
        assert public in alice.gossip._ours and public in bob.gossip._ours

        # BOLT 7: htlc_minimum_msat is the minimum HTLC value the channel peer will accept.
        alice_update, bob_update = alice_view.update(scid_public, to_bob), bob_view.update(scid_public, to_alice)
        assert alice_update is not None and bob_update is not None
        assert alice_update.htlc_minimum_msat == 5_000  # Bob's minimum, above Alice's policy's 1
        assert bob_update.htlc_minimum_msat == 10_000  # Bob's policy, above Alice's 7,000
        assert alice_update.htlc_maximum_msat == bob_update.htlc_maximum_msat == SAT * 1000  # the capacity
    finally:
        await alice.stop()
        await bob.stop()


def test_private_channel_is_never_signed_and_public_update_respects_the_peers_minimum() -> None:
    asyncio.run(asyncio.wait_for(_scenario(), 40))
