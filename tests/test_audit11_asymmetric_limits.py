"""Issue 11, item 1, with each side asking for different limits (audit).

``tests/test_limits_node.py`` runs two nodes with the same settings, so a limit copied from the
wrong message (ours instead of the peer's) would pass it. Here Alice and Bob announce different
reserves, minimums and HTLC counts; each must hold the other to what the other announced, in
both directions, at the boundary: N passes, N + 1 (or N - 1 for a minimum) is refused.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from lightspeed.node.node import HtlcHeld, Node
from lightspeed.node.settings import ChannelSettings
from tests.support.network import node_key, until, with_miner

SAT = 1_000_000
PUSH_MSAT = 400_000_000
# What each asks of the other: Alice 2% reserve, HTLCs from 7,000 msat, at most 8 at once; Bob 5%, 3,000, 5.
ALICE = ChannelSettings(reserve_ppm=20_000, htlc_minimum_msat=7_000, max_accepted_htlcs=8)
BOB = ChannelSettings(reserve_ppm=50_000, htlc_minimum_msat=3_000, max_accepted_htlcs=5)


def test_each_side_holds_the_other_to_what_the_other_announced() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(node_key(110), chain, b"audit11 asymmetric alice", channel_settings=ALICE)
        bob = Node(node_key(111), chain, b"audit11 asymmetric bob!!", channel_settings=BOB)
        chain.fund(alice.wallet.new_key().script_pubkey, 2 * SAT)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        held: list[HtlcHeld] = []

        async def watch() -> None:
            async for event in bob.events():
                if isinstance(event, HtlcHeld):
                    held.append(event)

        watcher = asyncio.create_task(watch())
        try:
            opened: list[bytes] = []

            async def open_() -> None:
                opened.append(await alice.open_channel(bob.node_id, SAT, PUSH_MSAT))

            await with_miner(chain, open_)
            (cid,) = opened
            await until(lambda: bob.channel_is_ready(cid))
            mine, theirs = alice.channels[cid].config, bob.channels[cid].config
            # BOLT #2: channel_reserve_satoshis is what the sender asks the other side to keep.
            assert (mine.reserve_for_local_sat, mine.reserve_from_remote_sat) == (50_000, 20_000)
            assert (theirs.reserve_for_local_sat, theirs.reserve_from_remote_sat) == (20_000, 50_000)
            assert (mine.remote_htlc_minimum_msat, theirs.remote_htlc_minimum_msat) == (3_000, 7_000)
            assert (mine.remote_max_accepted_htlcs, theirs.remote_max_accepted_htlcs) == (5, 8)

            # Bob (not the funder) may spend down to the 2% Alice asked for, not to Bob's own 5%.
            bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
            n = bob.channels[cid].sendable_msat()
            assert n == bob_msat - 20_000 * 1000
            with pytest.raises(PaymentError, match=f"can send at most {n} msat"):
                await bob.pay(alice.create_invoice(n + 1, "one msat into Alice's reserve ask"), timeout=20)
            # Each minimum is the receiver's: Alice takes nothing under 7,000 msat, Bob from 3,000.
            assert bob.channels[cid].offer_problem(6_999) is not None
            assert bob.channels[cid].offer_problem(7_000) is None
            assert alice.channels[cid].offer_problem(2_999) is not None
            assert alice.channels[cid].offer_problem(3_000) is None
            assert await asyncio.wait_for(bob.pay(alice.create_invoice(7_000, "Alice's minimum")), 20)
            assert await asyncio.wait_for(alice.pay(bob.create_invoice(3_000, "Bob's minimum")), 20)

            # Alice (the funder) keeps the 5% Bob asked for, fees and anchors above it.
            alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
            assert alice.channels[cid].sendable_msat() < alice_msat - 50_000 * 1000

            # Bob accepts at most 5 HTLCs from Alice: with 5 held, a sixth is refused; Alice takes 8 from Bob.
            secrets = [os.urandom(32) for _ in range(5)]
            paying = [asyncio.create_task(alice.pay(bob.create_hold_invoice(sha256(s), 10_000, f"held {i}"),
                                                    timeout=30)) for i, s in enumerate(secrets)]
            await until(lambda: len(held) == 5)
            problem = alice.channels[cid].offer_problem(10_000)
            assert problem is not None and "max_accepted_htlcs" in problem and "at most 5 HTLCs" in problem
            assert bob.channels[cid].offer_problem(10_000) is None  # Bob's way: none of Alice's 8 in use
            for secret in secrets:
                await bob.settle_hold(secret)
            assert all(await asyncio.wait_for(asyncio.gather(*paying), 20))
            await until(lambda: not alice.channels[cid].log.commitment(Side.REMOTE).htlcs)
            assert alice.channels[cid].offer_problem(10_000) is None
        finally:
            watcher.cancel()
            await alice.stop()
            await bob.stop()

    asyncio.run(asyncio.wait_for(scenario(), 90))
